"""Inventory from moto's real DescribeInstanceTypes / Offerings / SpotPriceHistory answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from broker.domain.enums import Health, SiteKind
from connectors.base import Ability
from connectors.errors import Unsupported
from tests.connectors.aws.conftest import SITE, Built

pytestmark = pytest.mark.usefixtures("mocked")

MOTO_SPOT = 0.00001  # moto answers every spot price history query with this price


async def test_pools_follow_gpu_info_and_the_catalog(aws: Callable[..., Built]) -> None:
    inv = await aws().connector.inventory()
    assert inv.site.name == SITE and inv.site.kind is SiteKind.AWS
    assert inv.site.health is Health.HEALTHY and not inv.site.private
    pools = {p.id: p for p in inv.pools}
    p4d, p4de, p3dn = (
        pools[f"{SITE}/p4d.24xlarge"],
        pools[f"{SITE}/p4de.24xlarge"],
        pools[f"{SITE}/p3dn.24xlarge"],
    )
    assert (p4d.gpu_model, p4d.gpu_memory_gb, p4d.gpus_per_node) == ("A100", 40.0, 8)
    assert (p4de.gpu_model, p4de.gpu_memory_gb) == ("A100-80GB", 80.0)
    assert (p3dn.gpu_model, p3dn.gpu_memory_gb) == ("V100-32GB", 32.0)
    # on-demand per GPU-hour: the catalog's us-east-1 price / 8 GPUs
    assert p4d.price_on_demand == pytest.approx(21.957642 / 8)
    assert p4d.price_spot == pytest.approx(MOTO_SPOT / 8)
    assert (p4d.cpu_per_node, p4d.memory_gb_per_node) == (96.0, 1152.0)
    assert p4d.nodes == 16 and p4d.site == SITE and p4d.updated_at is not None
    # moto's offerings: p4de only in 1b and 1c
    assert p4de.extra["zones"] == "us-east-1b,us-east-1c"
    assert p4de.extra["instance_type"] == "p4de.24xlarge"
    assert p4d.extra["spot_source"] == "spot-price-history"
    assert p4d.extra["price_source"] == "catalog 2025-11-30"


async def test_unusable_types_are_left_out(aws: Callable[..., Built]) -> None:
    types = {p.extra["instance_type"] for p in (await aws().connector.inventory()).pools}
    assert "p5.48xlarge" in types and "g5.xlarge" in types
    assert not {t for t in types if t.startswith(("g5g.", "g6f.", "gr6f."))}  # T4g, fractions
    assert "p5e.48xlarge" not in types  # offered, but no price anywhere in the catalog
    assert not {t for t in types if not t.startswith(("g", "p"))}


async def test_allow_list_and_max_nodes(aws: Callable[..., Built]) -> None:
    inv = await aws(instance_types=["p5.48xlarge", "g6e.xlarge"], max_nodes=3).connector.inventory()
    assert sorted(p.extra["instance_type"] for p in inv.pools) == ["g6e.xlarge", "p5.48xlarge"]
    assert {p.nodes for p in inv.pools} == {3}
    # cheapest per GPU-hour first
    assert [p.extra["instance_type"] for p in inv.pools] == ["g6e.xlarge", "p5.48xlarge"]


async def test_configured_zones_restrict_pools(aws: Callable[..., Built]) -> None:
    inv = await aws(zones=["us-east-1b"]).connector.inventory()
    by_type = {p.extra["instance_type"]: p for p in inv.pools}
    assert by_type["p4de.24xlarge"].extra["zones"] == "us-east-1b"
    assert "p5en.48xlarge" not in by_type  # offered in 1a and 1c only
    assert {p.extra["zones"] for p in inv.pools} == {"us-east-1b"}


async def test_fallback_price_from_another_region(
    aws: Callable[..., Built], tmp_path: Path
) -> None:
    catalog = tmp_path / "prices.csv"
    catalog.write_text(
        "instance_type,region,gpu_model,gpus,on_demand_usd_h,spot_usd_h,snapshot_date\n"
        "p5.48xlarge,us-west-2,H100,8,55.04,17.0,2025-11-30\n"
        "p5.48xlarge,eu-north-1,H100,8,60.0,20.0,2025-11-30\n"
        "g5.xlarge,us-east-1,A10G,1,1.006,0.3,2025-11-30\n"
    )
    inv = await aws(price_catalog=catalog.name).connector.inventory()
    by_type = {p.extra["instance_type"]: p for p in inv.pools}
    assert set(by_type) == {"p5.48xlarge", "g5.xlarge"}
    assert by_type["p5.48xlarge"].price_on_demand == pytest.approx(60.0 / 8)
    assert by_type["p5.48xlarge"].extra["price_source"] == "catalog eu-north-1 2025-11-30"
    assert by_type["g5.xlarge"].price_on_demand == pytest.approx(1.006)


async def test_other_region(aws: Callable[..., Built]) -> None:
    built = aws(region="eu-north-1", image_id="ami-0f01974d5fd3b4530")
    inv = await built.connector.inventory()
    by_type = {p.extra["instance_type"]: p for p in inv.pools}
    assert inv.site.region == "eu-north-1"
    assert by_type["p5.48xlarge"].extra["zones"] == "eu-north-1a,eu-north-1b,eu-north-1c"
    assert "p4de.24xlarge" not in by_type  # not offered in eu-north-1


async def test_declared_abilities(aws: Callable[..., Built]) -> None:
    connector = aws().connector
    assert connector.supports(Ability.PROVISION) and connector.supports(Ability.SPOT)
    for ability in (Ability.DISPATCH, Ability.CANCEL, Ability.FOLLOW, Ability.MIG, Ability.GANG):
        assert not connector.supports(ability)
    with pytest.raises(Unsupported):
        await connector.cancel(job_id="j", external_id=None, reason="test")
    updates = connector.updates()
    await connector.close()
    assert [u async for u in updates] == []
