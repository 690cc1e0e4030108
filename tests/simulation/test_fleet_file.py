"""config/fleets/realistic.yaml: loads as settings, uses known zones and locations, regenerates."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from broker.config import load_settings

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "config" / "fleets" / "realistic.yaml"
PRICES = REPO.parent / "shared" / "data" / "prices" / "derived" / "gpu_offers_long.csv"


def _column(path: Path, *columns: str) -> set[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row[c] for row in csv.DictReader(f) for c in columns}


def test_fleet_loads_and_uses_known_zones_and_locations() -> None:
    settings = load_settings(FLEET, env={})
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


def test_build_fleet_regenerates_byte_for_byte(tmp_path: Path) -> None:
    if not PRICES.exists():
        pytest.skip(f"{PRICES} is not available")
    out = tmp_path / "fleet.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "config" / "fleets" / "build_fleet.py"),
            *("--prices", str(PRICES), "--output", str(out)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == FLEET.read_bytes()
