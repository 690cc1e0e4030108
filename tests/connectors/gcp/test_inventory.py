"""Inventory through the real google-cloud-compute REST clients against the fake server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker.domain.clock import ManualClock
from broker.domain.enums import Health, SiteKind
from connectors.errors import Unsupported
from connectors.gcp.connector import GcpConnector
from tests.connectors.gcp.conftest import SITE, MakeConnector
from tests.connectors.gcp.fake_compute import FakeCompute


async def test_pools_cover_bundled_and_attached_gpus_with_shipped_prices(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.page_size = 3
    inv = await connector.inventory()
    assert (inv.site.name, inv.site.kind, inv.site.health) == (SITE, SiteKind.GCP, Health.HEALTHY)
    pools = {p.id.removeprefix(f"{SITE}/"): p for p in inv.pools}
    assert sorted(pools) == [
        "a2-highgpu-1g",
        "a2-highgpu-2g",
        "a2-ultragpu-1g",
        "a3-highgpu-8g",
        "g2-standard-4",
        "g2-standard-8",
        "n1-standard-16-nvidia-tesla-t4x2",
        "n1-standard-16-nvidia-tesla-v100x2",
        "n1-standard-32-nvidia-tesla-t4x4",
        "n1-standard-32-nvidia-tesla-v100x4",
        "n1-standard-8-nvidia-tesla-t4x1",
        "n1-standard-8-nvidia-tesla-v100x1",
    ]  # no e2 (no GPU), TPU, P4 (no canonical model) or virtual-workstation L4
    a2 = pools["a2-highgpu-1g"]
    assert (a2.gpu_model, a2.gpu_memory_gb, a2.gpus_per_node, a2.nodes) == ("A100", 40.0, 1, 16)
    # us-central1 list prices (2026-05-20): host 0.73948 (spot 0.36975) + A100 2.93391 (1.4341)
    assert a2.price_on_demand == pytest.approx(3.67339)
    assert a2.price_spot == pytest.approx(1.80385)
    assert (a2.cpu_per_node, a2.memory_gb_per_node) == (12.0, 85.0)
    assert a2.extra["zones"] == "us-central1-a,us-central1-b,us-central1-c"
    h100 = pools["a3-highgpu-8g"]
    assert (h100.gpu_model, h100.gpus_per_node, h100.extra["zones"]) == ("H100", 8, "us-central1-b")
    t4 = pools["n1-standard-8-nvidia-tesla-t4x1"]
    assert t4.extra == {
        "machine_type": "n1-standard-8",
        "accelerator_type": "nvidia-tesla-t4",
        "accelerator_count": "1",
        "attached": "true",
        "zones": "us-central1-a,us-central1-b,us-central1-c",
    }
    assert t4.price_on_demand == pytest.approx(0.73)  # n1-standard-8 0.38 + T4 0.35
    # the machine type lists were read page by page
    assert fake.count("GET /compute/v1/projects/broker-test/zones/us-central1-a/machineTypes?") >= 2


async def test_zones_default_to_the_regions_and_the_allow_list_applies(
    make_connector: MakeConnector, fake: FakeCompute
) -> None:
    fake.zones.pop("us-central1-c")
    c = make_connector(zones=None, machine_types=["g2-*", "n1-standard-8"], max_nodes=3)
    inv = await c.inventory()
    assert {p.id.removeprefix(f"{SITE}/"): p.extra["zones"] for p in inv.pools} == {
        "g2-standard-4": "us-central1-a,us-central1-b",
        "g2-standard-8": "us-central1-a",
        "n1-standard-8-nvidia-tesla-t4x1": "us-central1-a,us-central1-b",
    }
    assert {p.nodes for p in inv.pools} == {3}


async def test_listings_are_reused_until_the_ttl_passes(
    connector: GcpConnector, fake: FakeCompute, clock: ManualClock
) -> None:
    await connector.inventory()
    listed = fake.count("GET /compute/v1/projects/broker-test/zones/us-central1-a/machineTypes")
    await connector.inventory()
    assert (
        fake.count("GET /compute/v1/projects/broker-test/zones/us-central1-a/machineTypes")
        == listed
    )
    clock.advance(3601)
    fake.zones["us-central1-b"]["machines"].remove("a3-highgpu-8g")
    inv = await connector.inventory()
    assert f"{SITE}/a3-highgpu-8g" not in {p.id for p in inv.pools}


async def test_a_region_that_is_not_up_degrades_the_site(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.region_status = "DOWN"
    inv = await connector.inventory()
    assert inv.site.health is Health.DEGRADED
    assert "DOWN" in inv.site.health_reason


async def test_a_custom_price_catalog_replaces_the_shipped_one(
    make_connector: MakeConnector, tmp_path: Path
) -> None:
    (tmp_path / "ours.csv").write_text(
        "region,machine_type,accelerator_type,accelerator_count,on_demand_usd_hr,spot_usd_hr\n"
        "us-central1,g2-standard-4,nvidia-l4,1,0.5,\n",
        encoding="utf-8",
    )
    inv = await make_connector(price_catalog="ours.csv").inventory()
    assert [(p.id, p.price_on_demand, p.price_spot) for p in inv.pools] == [
        (f"{SITE}/g2-standard-4", 0.5, None)
    ]


async def test_jobs_are_not_this_connectors_business(connector: GcpConnector) -> None:
    with pytest.raises(Unsupported):
        await connector.adopt(job=None, placement=None)  # type: ignore[arg-type]
    with pytest.raises(Unsupported):
        await connector.cancel(job_id="j", external_id=None, reason="r")
    updates = connector.updates()
    pending = asyncio.ensure_future(anext(updates))
    await asyncio.sleep(0)
    assert not pending.done()
    await connector.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, timeout=5)
