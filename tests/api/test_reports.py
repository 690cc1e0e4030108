"""The sustainability report over the API: numbers, grouping, formats, tenancy, bad input."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.api.keys import STORE
from broker.domain.enums import JobKind, Tier
from broker.domain.footprint import RunFootprint
from broker.domain.jobs import JobSpec, Resources, Workload
from tests.conftest import ADMIN, NLP, VISION

Client = TestClient[Any, Any]
DAY = datetime(2026, 11, 2, tzinfo=UTC)
PERIOD = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z"}


def run(job_id: str, tenant: str, site: str, **kw: Any) -> RunFootprint:
    base: dict[str, Any] = dict(
        job_id=job_id,
        tenant=tenant,
        tier=Tier.P2,
        site=site,
        grid_zone="NO",
        gpu_model="H100",
        gpus=2.0,
        outcome="succeeded",
        started_at=DAY + timedelta(hours=10),
        ended_at=DAY + timedelta(hours=12),
        energy_kwh=2.0,
        gpu_energy_kwh=1.8,
        intensity_gco2_per_kwh=50.0,
        intensity_sources="static",
        intensity_estimated=False,
        intensity_forecast=False,
        gco2=100.0,
        baseline_site="cheap",
        baseline_gco2=700.0,
        avoided_gco2=600.0,
        added_gco2=0.0,
        cost_usd=12.0,
        gpu_hours=4.0,
    )
    base.update(kw)
    return RunFootprint(**base)


async def seed(client: Client) -> None:
    store = client.app[STORE]
    for job_id, tenant in (("a", "vision-team"), ("b", "vision-team"), ("c", "nlp-team")):
        spec = JobSpec(
            name=job_id,
            tier=Tier.P2,
            kind=JobKind.TRAINING,
            resources=Resources(gpus=2),
            workload=Workload(image="i"),
            estimated_duration_s=3600,
        )
        job, _ = await store.create_job(tenant=tenant, spec=spec)
        kw: dict[str, Any] = {}
        if job_id == "b":  # dirtier than the blind choice: added, not negative avoided
            kw = dict(
                site="dirty",
                energy_kwh=1.0,
                intensity_gco2_per_kwh=400.0,
                gco2=400.0,
                baseline_gco2=300.0,
                avoided_gco2=0.0,
                added_gco2=100.0,
                ended_at=DAY + timedelta(days=1, hours=1),
            )
        if job_id == "c":
            kw = dict(site="dirty", tier=Tier.P3)
        await store.record_footprint(run(job.id, tenant, kw.pop("site", "clean"), **kw))


async def test_json_report_totals_match_a_hand_sum(client: Client) -> None:
    await seed(client)
    resp = await client.get(
        "/v1/reports/sustainability", params={**PERIOD, "group_by": "site"}, headers=ADMIN
    )
    assert resp.status == 200
    body = await resp.json()
    total = body["total"]
    assert total["runs"] == 3
    assert total["energy_kwh"] == pytest.approx(5.0)
    assert total["kgco2e"] == pytest.approx(0.6)  # 100 + 400 + 100 g
    assert total["avoided_kgco2e"] == pytest.approx(1.2)  # 600 + 0 + 600 g
    assert total["added_kgco2e"] == pytest.approx(0.1)
    assert total["cost_usd"] == pytest.approx(36.0)
    assert total["gpu_hours"] == pytest.approx(12.0)
    assert total["intensity_gco2_per_kwh"] == pytest.approx(600 / 5.0)  # energy-weighted
    assert total["gco2_per_job"] == pytest.approx(200.0)
    groups = {g["key"]: g for g in body["groups"]}
    assert set(groups) == {"clean", "dirty"}
    assert groups["dirty"]["kgco2e"] == pytest.approx(0.5)
    assert "SCI" in body["method"]
    assert body["basis"] == "lifecycle"  # the default carbon.basis of the test config


async def test_users_see_their_tenant_only_and_groups_by_day_and_tier(client: Client) -> None:
    await seed(client)
    resp = await client.get(
        "/v1/reports/sustainability", params={**PERIOD, "group_by": "day"}, headers=VISION
    )
    body = await resp.json()
    assert body["total"]["runs"] == 2
    assert [g["key"] for g in body["groups"]] == ["2026-11-02", "2026-11-03"]
    resp = await client.get(
        "/v1/reports/sustainability", params={**PERIOD, "group_by": "tier"}, headers=NLP
    )
    assert [(g["key"], g["runs"]) for g in (await resp.json())["groups"]] == [("P3", 1)]


async def test_csv_and_html(client: Client) -> None:
    await seed(client)
    resp = await client.get(
        "/v1/reports/sustainability", params={**PERIOD, "format": "csv"}, headers=ADMIN
    )
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["key"] for r in rows] == ["nlp-team", "vision-team", "total"]
    assert float(rows[-1]["kgco2e"]) == pytest.approx(0.6)
    assert {r["basis"] for r in rows} == {"lifecycle"}
    resp = await client.get(
        "/v1/reports/sustainability", params={**PERIOD, "format": "html"}, headers=ADMIN
    )
    page = await resp.text()
    assert resp.content_type == "text/html"
    assert page.count("<svg") == 3 and "<script" not in page
    assert "0.600 kgCO2e emitted" in page
    assert "Carbon accounting basis: <strong>lifecycle</strong>" in page


async def test_an_empty_period_is_an_empty_valid_report(client: Client) -> None:
    params = {"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}
    for fmt in ("json", "csv", "html"):
        resp = await client.get(
            "/v1/reports/sustainability", params={**params, "format": fmt}, headers=ADMIN
        )
        assert resp.status == 200, fmt
    resp = await client.get("/v1/reports/sustainability", params=params, headers=ADMIN)
    body = await resp.json()
    assert body["groups"] == [] and body["total"]["runs"] == 0
    assert body["total"]["intensity_gco2_per_kwh"] is None


BAD = [
    ({"from": "yesterday"}, "from"),
    ({"from": "2026-11-01T00:00:00"}, "from"),
    ({"from": "2026-11-08T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from"),
    ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ({"group_by": "colour"}, "group_by"),
    ({"format": "pdf"}, "format"),
    ({"tenant": "x"}, "tenant"),
]


async def test_bad_parameters_are_422_with_the_field(client: Client) -> None:
    for params, field in BAD:
        resp = await client.get("/v1/reports/sustainability", params=params, headers=ADMIN)
        assert resp.status == 422, params
        body = await resp.json()
        assert body["type"] == "/problems/validation-error"
        assert [e["field"] for e in body["errors"]] == [field], params
