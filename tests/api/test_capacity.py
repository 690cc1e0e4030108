"""Capacity routes: the forecast against private GPUs, and burst records in the API and report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from broker.api.keys import CAPACITY, CLOCK
from broker.config import load_settings
from broker.domain.capacity import ActionKind, ActionState, BurstInstance, CapacityAction
from broker.domain.errors import ConfigError
from tests.conftest import ADMIN, DEMO_CONFIG, VISION


async def test_forecast_on_the_demo_fleet_and_bad_parameters(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/v1/forecasts/capacity?horizon=6h", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["horizon_h"] == 6 and body["quantile"] == 0.9
    assert body["method"] == "seasonal_naive"  # a fresh database has no history to learn
    assert body["burst"] == {"enabled": False, "planned": [], "skipped": [], "unreachable": {}}
    assert body["reasoning"][-1] == "bursting is off: nothing will be provisioned"
    assert "private capacity covers the forecast" in body["reasoning"]

    for query, field in (
        ("horizon=0h", "horizon"),
        ("horizon=49", "horizon"),
        ("horizon=soon", "horizon"),
        ("window=24h", "window"),
    ):
        resp = await client.get(f"/v1/forecasts/capacity?{query}", headers=ADMIN)
        assert resp.status == 422, query
        problem = await resp.json()
        assert problem["errors"][0]["field"] == field
    resp = await client.get("/v1/forecasts/capacity", headers=VISION)
    assert resp.status == 403


async def test_bursts_and_reclaims_show_in_the_api_and_the_report(
    client: TestClient[Any, Any],
) -> None:
    app = client.server.app
    store, now = app[CAPACITY], app[CLOCK].now()
    launched = now - timedelta(hours=3)
    burst = CapacityAction(
        id="burst-1",
        kind=ActionKind.BURST,
        provider_site="aws-us-east-1",
        joins_site="oslo-private",
        gpu_model="H100",
        count=1,
        spot=False,
        reason="2 P1 jobs waited 90 s",
        requested_at=launched,
        usd_per_hour=98.0,
        gco2e_per_hour=2_000.0,
        state=ActionState.REQUESTED,
        for_jobs=("j1", "j2"),
        tenants={"vision-team": 1.0},
    )
    await store.record_action(burst)
    await store.add_instances(
        "burst-1",
        [
            BurstInstance(
                provider_site="aws-us-east-1",
                instance_id="i-0abc",
                action_id="burst-1",
                gpu_model="H100",
                gpus=8,
                zone="us-east-1a",
                spot=False,
                usd_per_hour=98.0,
                gco2e_per_hour=2_000.0,
                launched_at=launched,
            )
        ],
    )
    resp = await client.get("/v1/capacity/actions", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    (item,) = body["items"]
    assert (item["id"], item["kind"], item["for_jobs"]) == ("burst-1", "burst", ["j1", "j2"])
    totals = body["totals"]
    assert totals["bursts"] == 1 and totals["instances"] == 1
    assert totals["instance_hours"] == pytest.approx(3.0, abs=0.01)
    assert totals["cost_usd"] == pytest.approx(294.0, abs=1.0)  # 3 h x $98
    assert totals["kgco2e"] == pytest.approx(6.0, abs=0.02)  # 3 h x 2 kg
    metrics = await (await client.get("/metrics")).text()
    assert 'broker_burst_instances{site="aws-us-east-1"} 1.0' in metrics
    assert 'broker_burst_usd_per_hour{site="aws-us-east-1"} 98.0' in metrics
    assert "broker_scheduled_leader " in metrics
    resp = await client.get("/v1/capacity/actions?kind=reclaim", headers=ADMIN)
    assert (await resp.json())["items"] == []
    resp = await client.get("/v1/capacity/actions?kind=scale", headers=ADMIN)
    assert resp.status == 422

    # The sustainability report shows it to operators, beside the runs, not in them.
    resp = await client.get("/v1/reports/sustainability", headers=ADMIN)
    report = await resp.json()
    assert report["cloud_capacity"]["cost_usd"] == pytest.approx(294.0, abs=1.0)
    assert report["total"]["kgco2e"] == 0
    resp = await client.get("/v1/reports/sustainability?format=html", headers=ADMIN)
    assert "Burst cloud capacity" in await resp.text()
    resp = await client.get("/v1/reports/sustainability", headers=VISION)
    assert "cloud_capacity" not in await resp.json()
    resp = await client.get("/v1/capacity/actions", headers=VISION)
    assert resp.status == 403


def test_burst_targets_must_name_a_cloud_site_and_a_kubernetes_site(tmp_path: Path) -> None:
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["burst"] = {
        "enabled": True,
        "targets": [{"provider": "aws-us-east-1", "joins": "oslo-private"}],
    }
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="is not an aws or gcp site"):
        load_settings(path, env={})
