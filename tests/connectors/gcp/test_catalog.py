"""GPU shapes from listed machine/accelerator types, prices, and the shipped price catalog."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carbon.power import GPU_MODELS
from connectors.gcp import catalog
from connectors.gcp.catalog import (
    ACCELERATOR_MODELS,
    DEFAULT_PRICES,
    AcceleratorInfo,
    MachineTypeInfo,
    Price,
    PriceCatalog,
    ZoneTypes,
)
from connectors.gcp.data import build_prices
from tests.conftest import SHARED_DATA

RAW_GCP = SHARED_DATA / build_prices.RAW
needs_shared = pytest.mark.skipif(not RAW_GCP.is_dir(), reason=f"no shared data at {RAW_GCP}")

A2 = MachineTypeInfo(
    name="a2-highgpu-1g", cpus=12, memory_gb=85.0, accelerator_type="nvidia-tesla-a100",
    accelerator_count=1,
)  # fmt: skip
A2X2 = MachineTypeInfo(
    name="a2-highgpu-2g", cpus=24, memory_gb=170.0, accelerator_type="nvidia-tesla-a100",
    accelerator_count=2,
)  # fmt: skip
N1_8 = MachineTypeInfo(name="n1-standard-8", cpus=8, memory_gb=30.0)
N1_16 = MachineTypeInfo(name="n1-standard-16", cpus=16, memory_gb=60.0)
E2 = MachineTypeInfo(name="e2-standard-4", cpus=4, memory_gb=16.0)
T4 = AcceleratorInfo(name="nvidia-tesla-t4", max_per_instance=1)
P4 = AcceleratorInfo(name="nvidia-tesla-p4", max_per_instance=4)

PRICES = PriceCatalog(
    {
        ("r1", "a2-highgpu-1g", "nvidia-tesla-a100", 1): Price(3.0, 1.5),
        ("r1", "a2-highgpu-2g", "nvidia-tesla-a100", 2): Price(5.99998, None),
        ("r1", "n1-standard-8", "nvidia-tesla-t4", 1): Price(0.8, 0.3),
        ("r1", "n1-standard-16", "nvidia-tesla-t4", 2): Price(1.4, 0.7),
    }
)


def _zones() -> list[ZoneTypes]:
    return [
        ZoneTypes(zone="r1-b", machine_types=(A2, N1_8, E2), accelerators=(T4, P4)),
        ZoneTypes(zone="r1-a", machine_types=(A2, A2X2, N1_8, N1_16), accelerators=()),
    ]


def test_every_gcp_accelerator_maps_to_a_known_gpu_model() -> None:
    assert set(ACCELERATOR_MODELS.values()) <= set(GPU_MODELS)
    assert catalog.ATTACHABLE.issubset(ACCELERATOR_MODELS)


def test_offerings_bundle_and_attach_gpus_where_each_zone_allows() -> None:
    offers = {
        o.key: o for o in catalog.offerings(region="r1", zones=_zones(), prices=PRICES, allow=None)
    }
    # T4 is attachable in r1-b only, and at most one per VM there: no n1-standard-16 x2 shape.
    assert sorted(offers) == ["a2-highgpu-1g", "a2-highgpu-2g", "n1-standard-8-nvidia-tesla-t4x1"]
    a2 = offers["a2-highgpu-1g"]
    assert (a2.gpu_model, a2.gpus, a2.attached, a2.zones) == ("A100", 1, False, ("r1-b", "r1-a"))
    t4 = offers["n1-standard-8-nvidia-tesla-t4x1"]
    assert (t4.machine_type, t4.accelerator_type, t4.attached, t4.zones) == (
        "n1-standard-8",
        "nvidia-tesla-t4",
        True,
        ("r1-b",),
    )


def test_unpriced_shapes_are_left_out() -> None:
    offers = catalog.offerings(region="r2", zones=_zones(), prices=PRICES, allow=None)
    assert offers == []


@pytest.mark.parametrize(
    ("allow", "keys"),
    [
        (["a2-highgpu-*"], ["a2-highgpu-1g", "a2-highgpu-2g"]),
        (["n1-standard-8"], ["n1-standard-8-nvidia-tesla-t4x1"]),
        (
            ["*-nvidia-tesla-t4x1", "a2-highgpu-2g"],
            ["a2-highgpu-2g", "n1-standard-8-nvidia-tesla-t4x1"],
        ),
        ([], []),
    ],
)
def test_the_allow_list_matches_machine_types_or_pool_keys(
    allow: list[str], keys: list[str]
) -> None:
    offers = catalog.offerings(region="r1", zones=_zones(), prices=PRICES, allow=allow)
    assert [o.key for o in offers] == keys


def test_cheapest_ranks_per_gpu_hour_and_breaks_near_ties_to_the_smaller_machine() -> None:
    offers = catalog.offerings(region="r1", zones=_zones(), prices=PRICES, allow=None)
    # 5.99998 / 2 = 2.99999 is under 3.0 by less than a hundredth of a cent: a tie.
    ranked = catalog.cheapest(offers, gpu_model_name="a100", spot=False)
    assert [o.key for o in ranked] == ["a2-highgpu-1g", "a2-highgpu-2g"]
    # spot: the 1-GPU VM has a spot price (1.5); the 2-GPU VM falls back to on-demand
    ranked = catalog.cheapest(offers, gpu_model_name="A100", spot=True)
    assert ranked[0].gpu_hour(spot=True) == 1.5
    assert catalog.cheapest(offers, gpu_model_name="H100", spot=False) == []


def test_a_pool_shows_per_gpu_prices_and_the_shape_in_extra() -> None:
    offers = catalog.offerings(region="r1", zones=_zones(), prices=PRICES, allow=["a2-highgpu-2g"])
    now = datetime(2026, 11, 23, tzinfo=UTC)
    pool = catalog.pool(offers[0], site="gcp-r1", nodes=7, now=now)
    assert pool.id == "gcp-r1/a2-highgpu-2g"
    assert (pool.gpu_model, pool.gpus_per_node, pool.nodes) == ("A100", 2, 7)
    assert pool.gpu_memory_gb == 40.0
    assert pool.price_on_demand == pytest.approx(2.99999)
    assert pool.price_spot is None
    assert (pool.cpu_per_node, pool.memory_gb_per_node, pool.updated_at) == (24.0, 170.0, now)
    assert pool.extra == {
        "machine_type": "a2-highgpu-2g",
        "accelerator_type": "nvidia-tesla-a100",
        "accelerator_count": "2",
        "attached": "false",
        "zones": "r1-a",
    }


def test_the_shipped_catalog_loads_and_stays_small() -> None:
    prices = PriceCatalog.load()
    assert DEFAULT_PRICES.stat().st_size < 64 * 1024
    assert len(prices) > 100
    a2 = prices.price(
        region="us-central1",
        machine_type="a2-highgpu-1g",
        accelerator_type="nvidia-tesla-a100",
        count=1,
    )
    assert a2 is not None and a2.spot is not None and a2.spot < a2.on_demand


def test_a_catalog_with_other_columns_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "prices.csv"
    bad.write_text("region,machine_type,price\nus-central1,a2-highgpu-1g,3.0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected columns"):
        PriceCatalog.load(bad)


@needs_shared
def test_shipped_prices_are_host_plus_accelerator_from_the_raw_rows() -> None:
    def raw(name: str, **match: str) -> tuple[float, float]:
        with (RAW_GCP / name).open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if all(row[k] == v for k, v in match.items()):
                    return float(row["Price"]), float(row["SpotPrice"])
        raise AssertionError(f"no row {match} in {name}")

    host = raw("vms.gpu_host_vms.csv", InstanceType="n1-standard-8", Region="us-central1")
    gpu = raw(
        "vms.accelerators.csv", AcceleratorName="T4", AcceleratorCount="1", Region="us-central1"
    )
    price = PriceCatalog.load().price(
        region="us-central1",
        machine_type="n1-standard-8",
        accelerator_type="nvidia-tesla-t4",
        count=1,
    )
    assert price is not None
    assert price.on_demand == pytest.approx(host[0] + gpu[0], abs=1e-5)
    assert price.spot == pytest.approx(host[1] + gpu[1], abs=1e-5)


@needs_shared
def test_build_prices_reproduces_the_shipped_file(tmp_path: Path) -> None:
    out = tmp_path / "prices.csv"
    assert build_prices.main([str(SHARED_DATA), "--out", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_PRICES.read_bytes()


@pytest.mark.parametrize(
    ("machine_type", "gpus"),
    [
        ("a2-highgpu-4g", ("A100", 4)),
        ("a2-megagpu-16g", ("A100", 16)),
        ("a2-ultragpu-8g", ("A100-80GB", 8)),
        ("a3-highgpu-8g", ("H100", 8)),
        ("a3-megagpu-8g", ("H100-MEGA", 8)),
        ("g2-standard-24", ("L4", 2)),
        ("g2-standard-8", ("L4", 1)),
        ("a4-highgpu-8g", None),
        ("a3-ultragpu-8g", None),
        ("n1-standard-8", None),
    ],
)
def test_build_prices_knows_which_gpus_come_with_each_machine_type(
    machine_type: str, gpus: tuple[str, int] | None
) -> None:
    assert build_prices.bundled(machine_type) == gpus
