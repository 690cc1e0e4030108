"""Hostile input gets a 4xx problem document, never a 500, stores nothing, and writes no
traceback to the log: one test per cause, each on SQLite and PostgreSQL (issue 13, item 3).

Where each is stopped: query parameters in `broker.api.query` (ASCII digits, int64, the
years of `broker.domain.bounds`), cursors where the store decodes them, the JSON body by
pydantic's parser (nesting capped, no NaN), the token by the auth check, the rest by the
request schemas (finite numbers, no NUL byte, deadlines in range) before the store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import pytest
import sqlalchemy.exc
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.api.problems import problem_middleware
from tests.api.test_errors import assert_no_jobs, problem
from tests.conftest import ADMIN, VISION, job_body

Client = TestClient[Any, Any]
JSON = {**VISION, "Content-Type": "application/json"}


@pytest.fixture(autouse=True)
def no_traceback(caplog: pytest.LogCaptureFixture) -> Any:
    """Fail a test whose requests logged an error or a traceback."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_unicode_digits_in_an_integer_parameter_are_a_422(client: Client) -> None:
    for raw in ("²", "٣", "１０", "9" * 40):  # int() reads all but the last; isdigit() all
        resp = await client.get("/v1/jobs", params={"limit": raw}, headers=VISION)
        body = await problem(resp, 422, "validation-error")
        assert body["errors"][0]["field"] == "limit"
    resp = await client.get("/v1/forecasts/capacity", params={"horizon": "²h"}, headers=ADMIN)
    assert (await problem(resp, 422, "validation-error"))["errors"][0]["field"] == "horizon"


async def test_a_cursor_with_unicode_digits_or_past_int64_is_a_422(client: Client) -> None:
    for raw in ("s:²", "s:١٢", f"s:{2**63}", "s:" + "9" * 30, "s:-1", "x" * 100):
        resp = await client.get("/v1/jobs", params={"cursor": cursor(raw)}, headers=VISION)
        body = await problem(resp, 422, "validation-error")
        assert body["errors"][0]["type"] == "invalid_cursor", raw
    resp = await client.get("/v1/jobs", params={"cursor": cursor(f"s:{2**63 - 1}")}, headers=VISION)
    assert resp.status == 200  # the largest BIGINT is a cursor, past every job


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/v1/reports/sustainability", VISION), ("/v1/capacity/actions", ADMIN)],
)
async def test_times_near_year_1_or_9999_in_a_period_are_a_422(
    client: Client, path: str, headers: dict[str, str]
) -> None:
    for name, value in (
        ("to", "0001-01-02T00:00:00Z"),  # `from` defaults to `to` minus a span: before year 1
        ("from", "0001-01-01T00:00:00+01:00"),  # in UTC, before year 1
        ("to", "9999-12-31T23:59:59-01:00"),  # in UTC, after year 9999
        ("from", "1969-12-31T23:59:59Z"),
    ):
        resp = await client.get(path, params={name: value}, headers=headers)
        body = await problem(resp, 422, "validation-error")
        assert body["errors"][0]["field"] == name
        assert body["errors"][0]["type"] == "range"
        assert "1970" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/placements:explain"])
async def test_a_deadline_near_year_1_or_9999_is_a_422(client: Client, path: str) -> None:
    for deadline in (
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T00:00:00Z",
        "3000-01-01T00:00:00Z",
    ):
        resp = await client.post(path, json=job_body(deadline=deadline), headers=VISION)
        body = await problem(resp, 422, "validation-error")
        assert body["errors"][0]["field"] == "deadline", deadline
    await assert_no_jobs(client)


async def test_json_nested_1000_deep_is_a_400(client: Client) -> None:
    for body in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000):
        resp = await client.post("/v1/jobs", data=body, headers=JSON)
        await problem(resp, 400, "malformed-json")
    await assert_no_jobs(client)


async def test_nan_and_infinity_literals_are_malformed_json(client: Client) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        text = json.dumps(job_body(max_hourly_cost=1.0)).replace("1.0", literal)
        resp = await client.post("/v1/jobs", data=text, headers=JSON)
        await problem(resp, 400, "malformed-json")
    await assert_no_jobs(client)


async def test_a_number_that_overflows_to_infinity_is_a_422(client: Client) -> None:
    for field, where in (
        ("max_hourly_cost", "max_hourly_cost"),
        ("latency_slo_ms", "latency_slo_ms"),
    ):
        body = job_body(origin="aws:us-east-1", **{field: 1.5})
        text = json.dumps(body).replace("1.5", "1e999")
        resp = await client.post("/v1/jobs", data=text, headers=JSON)
        found = await problem(resp, 422, "validation-error")
        assert found["errors"][0]["field"] == where
        assert found["errors"][0]["type"] == "finite_number"
    await assert_no_jobs(client)


NUL_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("workload.image", job_body(workload={"image": "nvcr.io/x\x00y"})),
    ("workload.command.1", job_body(workload={"image": "x", "command": ["python", "a\x00"]})),
    ("workload.env.EPOCHS", job_body(workload={"image": "x", "env": {"EPOCHS": "3\x00"}})),
    ("workload.env.A\x00B.[key]", job_body(workload={"image": "x", "env": {"A\x00B": "1"}})),
    ("name", job_body(name="train\x00")),
    ("origin", job_body(origin="aws:us-east-1\x00")),
    ("allowed_regions.0", job_body(allowed_regions=["us-east-1\x00"])),
    ("resources.gpu_models.0", job_body(resources={"gpu_models": ["H100\x00"]})),
    ("reference_gpu_model", job_body(reference_gpu_model="H100\x00")),
]


async def test_a_nul_byte_in_any_string_is_a_422_and_stores_nothing(client: Client) -> None:
    for field, body in NUL_FIELDS:
        resp = await client.post("/v1/jobs", json=body, headers=VISION)
        found = await problem(resp, 422, "validation-error")
        assert field in {e["field"] for e in found["errors"]}, (field, found["errors"])
    await assert_no_jobs(client)


async def test_a_nul_byte_or_undecodable_byte_in_a_job_id_is_a_404(client: Client) -> None:
    for job_id in ("job%00x", "job-%FF", "j" * 300):
        for method in ("GET", "DELETE"):
            resp = await client.request(method, f"/v1/jobs/{job_id}", headers=VISION)
            await problem(resp, 404, "not-found")


async def _raw_get(client: Client, path: str, header: bytes) -> tuple[int, bytes, bytes]:
    """A GET with one raw header line, as no well-behaved client would send it."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n"
        + header
        + b"\r\n\r\n"
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def test_a_non_utf8_authorization_header_is_a_401(client: Client) -> None:
    for value in (b"Bearer \xff\xfe", b"Bearer demo-vision-token\x80", b"\xc3 token"):
        status, head, body = await _raw_get(client, "/v1/jobs", b"Authorization: " + value)
        assert status == 401, body
        assert b"application/problem+json" in head
        assert json.loads(body)["type"] == "/problems/unauthorized"


async def test_empty_parameters_count_as_absent(client: Client) -> None:
    """As the OpenAPI document says: `?cursor=` is the first page, `?from=` the default."""
    resp = await client.get("/v1/jobs?cursor=&limit=", headers=VISION)
    assert resp.status == 200, await resp.text()
    resp = await client.get("/v1/reports/sustainability?from=&to=&format=", headers=VISION)
    assert resp.status == 200, await resp.text()
    resp = await client.get("/v1/forecasts/capacity?horizon=", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["horizon_h"] == 24
    resp = await client.get("/v1/capacity/actions?from=&kind=", headers=ADMIN)
    assert resp.status == 200, await resp.text()


async def test_an_objective_without_a_positive_weight_is_a_422(client: Client) -> None:
    """The document's `anyOf` says one weight must be positive, as the code does."""
    for objective in ({}, {"cost": 0, "latency": 0, "carbon": 0}):
        resp = await client.post("/v1/jobs", json=job_body(objective=objective), headers=VISION)
        found = await problem(resp, 422, "validation-error")
        assert found["errors"][0]["field"] == "objective"
    await assert_no_jobs(client)


async def test_an_exhausted_connection_pool_is_a_503_with_retry_after(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Overload is not a bug: no database connection in time is a 503 telling the client
    when to retry, logged as a warning without a traceback (the benchmark's 500s)."""

    async def busy(request: web.Request) -> web.Response:
        raise sqlalchemy.exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached")

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/v1/jobs", busy)
    client = await aiohttp_client(app)
    resp = await client.get("/v1/jobs")
    body = await problem(resp, 503, "overloaded")
    assert resp.headers["Retry-After"] == "2" and "retry" in body["detail"]
    assert "Traceback" not in caplog.text and "QueuePool" not in await resp.text()
