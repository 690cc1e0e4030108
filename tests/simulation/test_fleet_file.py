"""config/fleets/*.yaml: load as settings, use known zones and locations, follow the builder's
capacity rules, and regenerate byte for byte."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import load_settings

REPO = Path(__file__).resolve().parents[2]
FLEETS = REPO / "config" / "fleets"
FLEET = FLEETS / "realistic.yaml"
CLEAN_ROOM = FLEETS / "clean-room.yaml"
PRICES = REPO.parent / "shared" / "data" / "prices" / "derived" / "gpu_offers_long.csv"


def _column(path: Path, *columns: str) -> set[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row[c] for row in csv.DictReader(f) for c in columns}


@pytest.mark.parametrize("fleet", [FLEET, CLEAN_ROOM], ids=lambda p: p.name)
def test_fleet_loads_and_uses_known_zones_and_locations(fleet: Path) -> None:
    settings = load_settings(fleet, env={})
    zones = _column(REPO / "carbon" / "data" / "zone_intensity.csv", "zone")
    locations = _column(REPO / "config" / "latency.csv", "src", "dst")
    assert settings.latency.file is not None
    latency = settings.resolve(settings.latency.file).resolve()
    assert latency == (REPO / "config" / "latency.csv").resolve()
    private = [s for s in settings.sites if s.private]
    cloud = [s for s in settings.sites if not s.private]
    assert 3 <= len(private) <= 4
    assert 8 <= len(cloud) <= 12
    for site in settings.sites:
        assert site.grid_zone in zones, site.name
        assert site.latency_key in locations, site.name
        assert site.pools, site.name
        for pool in site.pools:
            assert pool.price_on_demand > 0
            if pool.price_spot is not None:
                assert 0 < pool.price_spot < pool.price_on_demand
    # Clean and dirty grids are both represented.
    intensity = {
        row["zone"]: float(row["gco2_per_kwh"])
        for row in csv.DictReader(
            (REPO / "carbon" / "data" / "zone_intensity.csv").open(encoding="utf-8")
        )
    }
    assert min(intensity[s.grid_zone] for s in cloud) < 50
    assert max(intensity[s.grid_zone] for s in cloud) > 400
    assert min(intensity[s.grid_zone] for s in private) < 50
    assert max(intensity[s.grid_zone] for s in private) > 300


def _intensity() -> dict[str, float]:
    with (REPO / "carbon" / "data" / "zone_intensity.csv").open(encoding="utf-8") as f:
        return {row["zone"]: float(row["gco2_per_kwh"]) for row in csv.DictReader(f)}


def test_cloud_capacity_follows_the_instance_class_rule() -> None:
    """16 nodes of each 8-GPU training type per region, 2 of each inference type."""
    training = {"H100", "A100-80GB", "A100", "L40S"}
    seen = set()
    for site in load_settings(FLEET, env={}).sites:
        if site.private:
            continue
        for p in site.pools:
            assert p.gpus_per_node == 8, (site.name, p.gpu_model)
            assert p.nodes == (16 if p.gpu_model in training else 2), (site.name, p.gpu_model)
            seen.add(p.gpu_model in training)
    assert seen == {True, False}


def test_clean_room_scales_only_the_private_clusters_on_clean_grids() -> None:
    intensity = _intensity()
    realistic = load_settings(FLEET, env={}).sites
    clean_room = load_settings(CLEAN_ROOM, env={}).sites
    assert [s.name for s in clean_room] == [s.name for s in realistic]
    scaled = set()
    for before, after in zip(realistic, clean_room, strict=True):
        factor = 20 if before.private and intensity[before.grid_zone] < 50 else 1
        if factor > 1:
            scaled.add(before.name)
        assert after.model_copy(update={"pools": ()}) == before.model_copy(update={"pools": ()})
        assert len(after.pools) == len(before.pools)
        for p0, p1 in zip(before.pools, after.pools, strict=True):
            assert p1.nodes == p0.nodes * factor, (before.name, p0.gpu_model)
            assert p1.model_copy(update={"nodes": p0.nodes}) == p0
    assert scaled == {"oslo-private", "montreal-private"}


def test_cloud_sites_match_the_region_table() -> None:
    table = {
        (r["provider"], r["region"]): r["zone"]
        for r in csv.DictReader(
            (REPO / "carbon" / "data" / "cloud_regions.csv").open(encoding="utf-8")
        )
    }
    for site in load_settings(FLEET, env={}).sites:
        if not site.private:
            provider, _, region = site.latency_key.partition(":")
            assert table[(provider, region)] == site.grid_zone, site.name


@pytest.mark.parametrize("fleet", [FLEET, CLEAN_ROOM], ids=lambda p: p.name)
def test_build_fleet_regenerates_byte_for_byte(tmp_path: Path, fleet: Path) -> None:
    if not PRICES.exists():
        pytest.skip(f"{PRICES} is not available")
    out = tmp_path / "fleet.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "config" / "fleets" / "build_fleet.py"),
            *("--fleet", fleet.stem, "--prices", str(PRICES), "--output", str(out)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == fleet.read_bytes()
