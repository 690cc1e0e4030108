"""Service load from Prometheus: the instant-query answers the broker reads, the ones it
treats as missing data, and a service scaled end to end on a query's value."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.domain.enums import Tier
from broker.domain.jobs import Resources, Workload
from broker.domain.services import Service, ServiceSpec, ServiceState
from broker.service import create_app
from broker.serving.prometheus import PrometheusLoad
from tests.api.test_services import service_body, until
from tests.conftest import VISION, fast_settings
from tests.serving.fake_prometheus import FakePrometheus

NOW = datetime(2026, 12, 7, 20, tzinfo=UTC)
QUERY = 'sum(rate(http_requests_total{service="chat"}[1m]))'


def service(query: str | None = QUERY) -> Service:
    spec = ServiceSpec(
        name="chat",
        tier=Tier.P1,
        resources=Resources(gpus=1),
        workload=Workload(image="x"),
        port=8000,
        load_query=query,
    )
    return Service(
        id="svc-1",
        tenant="t",
        spec=spec,
        state=ServiceState.ACTIVE,
        generation=1,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.fixture
async def prom() -> AsyncIterator[tuple[FakePrometheus, str]]:
    fake = FakePrometheus(token="prom-token-0123456789")
    url = await fake.start()
    yield fake, url
    await fake.stop()


async def test_vectors_are_summed_and_scalars_read(prom: tuple[FakePrometheus, str]) -> None:
    fake, url = prom
    async with aiohttp.ClientSession() as session:
        load = PrometheusLoad(session=session, url=url, timeout_s=2, token=fake.token)
        fake.vector(QUERY, 12.5, 7.5)
        assert await load.observe(service(), now=NOW) == 20.0
        fake.scalar(QUERY, 3)
        assert await load.observe(service(), now=NOW) == 3.0
    assert fake.requests[0] == {"query": QUERY, "time": f"{NOW.timestamp():.3f}"}


@pytest.mark.parametrize(
    "answer",
    [
        "empty",
        (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        (503, {"status": "error", "errorType": "unavailable", "error": "overloaded"}),
        (502, "not json"),
        (
            200,
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "NaN"]}]},
            },
        ),
        (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
    ],
)
async def test_errors_and_empty_results_are_missing_data_not_zero(
    prom: tuple[FakePrometheus, str], answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = prom
    if answer != "empty":
        fake.answers[QUERY] = answer
    async with aiohttp.ClientSession() as session:
        load = PrometheusLoad(session=session, url=url, timeout_s=2, token=fake.token)
        assert await load.observe(service(), now=NOW) is None
    assert "no load from Prometheus" in caplog.text and "Traceback" not in caplog.text


async def test_a_timeout_and_a_rejected_token_are_missing_data(
    prom: tuple[FakePrometheus, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = prom
    fake.vector(QUERY, 5)
    async with aiohttp.ClientSession() as session:
        wrong = PrometheusLoad(session=session, url=url, timeout_s=2, token="wrong-token-xyz")
        assert await wrong.observe(service(), now=NOW) is None
        # nothing listens on port 9: connection refused
        away = PrometheusLoad(session=session, url="http://127.0.0.1:9", timeout_s=0.5)
        assert await away.observe(service(), now=NOW) is None
        no_query = PrometheusLoad(session=session, url=url, timeout_s=2, token=fake.token)
        assert await no_query.observe(service(query=None), now=NOW) is None
    assert "wrong-token-xyz" not in caplog.text


async def test_a_service_scales_on_its_prometheus_query(
    aiohttp_client: Any, database_url: str, prom: tuple[FakePrometheus, str], tmp_path: Path
) -> None:
    fake, url = prom
    token_file = tmp_path / "prom-token"
    token_file.write_text(fake.token or "")
    settings = fast_settings(
        database_url,
        **{
            "serving.interval_s": 0.2,
            "serving.load": "prometheus",
            "serving.prometheus_url": url,
            "serving.prometheus_token_file": str(token_file),
        },
    )
    client = await aiohttp_client(create_app(settings))
    body = service_body()
    body["workload"]["env"] = {}
    body["autoscaling"]["load_query"] = QUERY
    fake.vector(QUERY, 10.0, 4.0)  # 14 rps at 10 per replica (70 %): 2 replicas
    resp = await client.post("/v1/services", json=body, headers=VISION)
    assert resp.status == 201, await resp.text()
    svc = (await resp.json())["id"]
    got = await until(client, svc, lambda b: b["desired_replicas"] == 2)
    assert got["load"]["value"] == 14.0
    fake.error(QUERY, 503, "unavailable", "Prometheus is restarting")
    await asyncio.sleep(1.0)  # an outage keeps what is there: missing data is not zero
    assert (await (await client.get(f"/v1/services/{svc}", headers=VISION)).json())[
        "desired_replicas"
    ] == 2
    await client.close()
