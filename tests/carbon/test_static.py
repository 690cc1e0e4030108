"""Tests for the shipped zone tables and StaticTableSource.

Values are checked against the raw public files in the shared data folder with a parser
written here, independent of the generator's, so a wrong mapping or rounding shows up. Tests
that need the shared folder skip when it is absent; the literal checks run everywhere.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path

import pytest

from carbon.base import CarbonSource
from carbon.basis import BasisMismatch
from carbon.static import StaticTableSource, ZoneIntensity, zone_for_region

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "carbon" / "data"
SHARED = REPO.parent / "shared" / "data" / "carbon"
GOOGLE = SHARED / "raw" / "GoogleCloudPlatform_region-carbon-info" / "data"
CODECARBON_MIX = (
    SHARED / "raw/mlco2_codecarbon/codecarbon/data/private_infra/global_energy_mix.json"
)
ZONE_MAPPING = SHARED / "derived" / "cloud_region_to_emaps_zone.csv"
EM_HOURLY = SHARED / "normalized" / "electricitymaps_hourly_2021_2022.csv"

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared data absent")

REQUIRED_ZONES = {
    # zones of the shared cloud-region mapping
    "US-MIDA-PJM",
    "US-CAL-CISO",
    "DE",
    "GB",
    "FR",
    "ES",
    "BR",
    "IN-WE",
    "NO",
    # zones asked for on top
    "SE",
    "FI",
    "NL",
    "IE",
    "BE",
    "JP-TK",
    "SG",
}
T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def source() -> StaticTableSource:
    return StaticTableSource.default()


def _cents(text: str | Decimal) -> float:
    return float(Decimal(text).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _google_files() -> dict[int, Path]:
    return {int(p.stem): p for p in GOOGLE.glob("yearly*/*.csv") if p.stem.isdigit()}


# --- the shipped table -------------------------------------------------------------------


def test_table_covers_required_zones_and_stays_small(source: StaticTableSource) -> None:
    assert source.zones >= REQUIRED_ZONES
    assert 30 <= len(source.zones) <= 48


def test_literal_rows() -> None:
    table = StaticTableSource.default(basis="operational")
    assert table.entry("NL") == ZoneIntensity(
        zone="NL",
        gco2_per_kwh=194.35,
        year=2025,
        basis="operational",
        source="google-region-carbon-info:2025:europe-west4",
    )
    assert StaticTableSource.default().entry("NO") == ZoneIntensity(
        zone="NO",
        gco2_per_kwh=30.08,
        year=2023,
        basis="lifecycle",
        source="codecarbon-global-energy-mix:NOR",
    )


def test_a_zone_with_both_bases_answers_in_the_chosen_one() -> None:
    lifecycle = StaticTableSource.default(basis="lifecycle")
    operational = StaticTableSource.default(basis="operational")
    for zone in ("FI", "DE", "NL"):
        lc, op = lifecycle.entry(zone), operational.entry(zone)
        assert lc is not None and op is not None
        assert (lc.basis, op.basis) == ("lifecycle", "operational")
        assert op.gco2_per_kwh < lc.gco2_per_kwh, zone  # upstream emissions add, never cut
        assert lifecycle.entries(zone) == {"lifecycle": lc, "operational": op}
    # A zone with no life-cycle figure is unknown on that basis, never served the other.
    assert operational.entry("IT-NO") is not None and lifecycle.entry("IT-NO") is None
    assert lifecycle.entry("NO") is not None and operational.entry("NO") is None


async def test_readings_carry_the_basis() -> None:
    for basis in ("operational", "lifecycle"):
        table = StaticTableSource.default(basis=basis)  # type: ignore[arg-type]
        reading = await table.current("DE", at=T0)
        assert reading is not None and reading.basis == basis
        (hour,) = await table.forecast("DE", start=T0, end=T0 + timedelta(hours=1))
        assert hour.basis == basis


def test_a_table_without_the_basis_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zones.csv"
    path.write_text(HEADER + "XX,1,2024,location-based operational,test\n", encoding="utf-8")
    with pytest.raises(BasisMismatch, match="static table cannot serve the lifecycle basis"):
        StaticTableSource.from_csv(path, basis="lifecycle")


def test_sources_are_only_licence_clean_files(source: StaticTableSource) -> None:
    """No number from an Electricity Maps export or Let's Wait Awhile is shipped."""
    for zone in source.zones:
        for row in source.entries(zone).values():
            kind, _, key = row.source.partition(":")
            assert kind in {"google-region-carbon-info", "codecarbon-global-energy-mix"}, row
            assert key


@needs_shared
def test_google_rows_recomputed_from_raw_csv() -> None:
    source = StaticTableSource.default(basis="operational")
    files = _google_files()
    newest = max(files)
    checked = 0
    for zone in sorted(source.zones):
        row = source.entry(zone)
        assert row is not None
        if not row.source.startswith("google-region-carbon-info:"):
            continue
        _, year, region = row.source.split(":")
        assert int(year) == row.year == newest, "Google rows must use the newest year"
        with files[newest].open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            raw = {r[0]: r[3] for r in reader if r}
        assert header[3].startswith("Grid carbon intensity")  # operational since 2021
        assert row.gco2_per_kwh == _cents(raw[region]), zone
        checked += 1
    assert checked >= 15
    # One row spelled out: Amsterdam's line in the newest Google file.
    eemshaven = next(
        line
        for line in files[newest].read_text(encoding="utf-8").splitlines()
        if line.startswith("europe-west4,")
    )
    nl = source.entry("NL")
    assert nl is not None
    assert nl.gco2_per_kwh == _cents(eemshaven.split(",")[3])


@needs_shared
def test_codecarbon_rows_recomputed_from_raw_json() -> None:
    mix = json.loads(CODECARBON_MIX.read_text(encoding="utf-8"), parse_float=Decimal)
    lifecycle = StaticTableSource.default(basis="lifecycle")
    for zone, iso in {"NO": "NOR", "IE": "IRL", "SE": "SWE", "IL": "ISR", "ZA": "ZAF"}.items():
        row = lifecycle.entry(zone)
        assert row is not None
        assert row.source == f"codecarbon-global-energy-mix:{iso}"
        assert row.gco2_per_kwh == _cents(mix[iso]["carbon_intensity"])
        assert row.year == mix[iso]["year"]


@needs_shared
def test_mapping_file_zones_all_have_a_row(source: StaticTableSource) -> None:
    with ZONE_MAPPING.open(encoding="utf-8", newline="") as handle:
        zones = {row["emaps_zone"] for row in csv.DictReader(handle)}
    assert zones <= source.zones


@needs_shared
def test_google_operational_figures_track_direct_not_lifecycle_means() -> None:
    """Backs the basis label and the us-west2 -> CISO call with Electricity Maps test data."""
    sums: dict[tuple[str, str], list[float]] = {}
    with EM_HOURLY.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            acc = sums.setdefault((row["region"], row["timestamp_utc"][:4]), [0.0, 0.0, 0])
            acc[0] += float(row["gco2_per_kwh_direct"])
            acc[1] += float(row["gco2_per_kwh"])
            acc[2] += 1
    files = _google_files()
    regions = {"US-CAL-CISO": "us-west2", "ES": "europe-southwest1", "BR": "southamerica-east1"}
    for year in ("2021", "2022"):
        with files[int(year)].open(encoding="utf-8-sig", newline="") as handle:
            google = {r[0]: float(r[3]) for r in csv.reader(handle) if r and r[3][:1].isdigit()}
        for zone, region in regions.items():
            direct, lifecycle, n = sums[(zone, year)]
            direct, lifecycle = direct / n, lifecycle / n
            assert abs(google[region] - direct) / direct < 0.10, (zone, year)
            assert abs(google[region] - direct) < abs(google[region] - lifecycle)


@needs_shared
def test_generator_reproduces_shipped_tables_byte_for_byte(tmp_path: Path) -> None:
    script = DATA / "build_tables.py"
    subprocess.run(
        [sys.executable, str(script), str(SHARED), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("zone_intensity.csv", "cloud_regions.csv"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_tables_are_package_resources() -> None:
    data = resources.files("carbon").joinpath("data")
    header = data.joinpath("zone_intensity.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "zone,gco2_per_kwh,year,basis,source"
    assert data.joinpath("cloud_regions.csv").is_file()


# --- zone_for_region ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "region", "zone"),
    [
        ("aws", "eu-north-1", "SE"),
        ("aws", "eu-west-1", "IE"),
        ("aws", "us-west-2", "US-NW-BPAT"),
        ("aws", "ap-northeast-1", "JP-TK"),
        ("aws", "us-east-1", "US-MIDA-PJM"),
        ("gcp", "europe-north1", "FI"),
        ("gcp", "europe-west4", "NL"),
        ("gcp", "europe-west1", "BE"),
        ("gcp", "us-central1", "US-MIDW-MISO"),
        ("gcp", "asia-southeast1", "SG"),
        ("gcp", "us-west2", "US-CAL-CISO"),
        ("AWS", " EU-West-2 ", "GB"),
    ],
)
def test_zone_for_region(provider: str, region: str, zone: str) -> None:
    assert zone_for_region(provider, region) == zone


@pytest.mark.parametrize(
    ("provider", "region"),
    [("aws", "mars-north-1"), ("gcp", "eu-north-1"), ("azure", "westeurope"), ("", "")],
)
def test_zone_for_unknown_region_is_none(provider: str, region: str) -> None:
    assert zone_for_region(provider, region) is None


def test_every_mapped_zone_has_an_intensity(source: StaticTableSource) -> None:
    with (DATA / "cloud_regions.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["provider"] for row in rows} == {"aws", "gcp"}
    # Each basis lacks a few zones that no licence-clean source covers (carbon/data/README.md).
    mapped = {row["zone"] for row in rows}
    operational = StaticTableSource.default(basis="operational").zones
    assert mapped - operational == {"IE"}
    assert mapped - source.zones == {"CA-ON", "IT-NO", "US-CENT-SWPP", "US-TEX-ERCO"}


@needs_shared
def test_confident_rows_of_shared_mapping_are_kept() -> None:
    with ZONE_MAPPING.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["provider"] in {"aws", "gcp"}]
    for row in rows:
        if row["confidence"] in {"high", "medium"}:
            assert zone_for_region(row["provider"], row["region"]) == row["emaps_zone"], row


# --- the CarbonSource behaviour ----------------------------------------------------------


def test_satisfies_protocol(source: StaticTableSource) -> None:
    assert isinstance(source, CarbonSource)
    assert source.name == "static"


async def test_current_is_annual_mean_marked_estimated(source: StaticTableSource) -> None:
    reading = await source.current("DE", at=T0 + timedelta(hours=5, minutes=7))
    assert reading is not None
    assert reading.zone == "DE"
    assert reading.gco2_per_kwh == 293.0  # lifecycle, the default basis
    assert reading.at == T0 + timedelta(hours=5, minutes=7)
    assert reading.source == "static"
    assert reading.estimated is True
    assert reading.forecast is False
    assert reading.stale is False


async def test_current_converts_to_utc(source: StaticTableSource) -> None:
    paris = timezone(timedelta(hours=1))
    reading = await source.current("FR", at=datetime(2025, 3, 1, 13, 0, tzinfo=paris))
    assert reading is not None
    assert reading.at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert reading.at.utcoffset() == timedelta(0)


async def test_current_unknown_zone_is_none(source: StaticTableSource) -> None:
    assert await source.current("XX-NOWHERE", at=T0) is None


async def test_forecast_one_reading_per_hour(source: StaticTableSource) -> None:
    readings = await source.forecast("SE", start=T0, end=T0 + timedelta(hours=24))
    assert len(readings) == 24
    assert [r.at for r in readings] == [T0 + timedelta(hours=h) for h in range(24)]
    assert all(r.forecast and r.estimated and not r.stale for r in readings)
    assert {r.gco2_per_kwh for r in readings} == {40.7}
    assert {(r.zone, r.source) for r in readings} == {("SE", "static")}


async def test_forecast_covers_partial_hours_on_the_hour(source: StaticTableSource) -> None:
    start = T0 + timedelta(hours=10, minutes=30)
    readings = await source.forecast("NL", start=start, end=T0 + timedelta(hours=12))
    assert [r.at for r in readings] == [T0 + timedelta(hours=10), T0 + timedelta(hours=11)]
    one = await source.forecast("NL", start=T0, end=T0 + timedelta(seconds=1))
    assert [r.at for r in one] == [T0]


async def test_forecast_empty_cases(source: StaticTableSource) -> None:
    assert await source.forecast("XX-NOWHERE", start=T0, end=T0 + timedelta(hours=3)) == []
    assert await source.forecast("DE", start=T0, end=T0) == []
    assert await source.forecast("DE", start=T0, end=T0 - timedelta(hours=1)) == []


async def test_naive_datetimes_are_refused(source: StaticTableSource) -> None:
    naive = datetime(2025, 3, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        await source.current("DE", at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        await source.forecast("DE", start=naive, end=T0)


# --- loading other tables ----------------------------------------------------------------

HEADER = "zone,gco2_per_kwh,year,basis,source\n"


async def test_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "zones.csv"
    path.write_text(HEADER + "XX,123.5,2024,location-based operational,test\n", encoding="utf-8")
    table = StaticTableSource.from_csv(path, basis="operational")
    assert table.zones == {"XX"}
    reading = await table.current("XX", at=T0)
    assert reading is not None
    assert reading.gco2_per_kwh == 123.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("zone,gco2,year,basis,source\nXX,1,2024,lifecycle,s\n", "expected columns"),
        (HEADER + "XX,1,2024,lifecycle,s\nXX,2,2024,lifecycle,s\n", "duplicate zone"),
        (HEADER + "XX,-1,2024,lifecycle,s\n", "out of range"),
        (HEADER + "XX,nan,2024,lifecycle,s\n", "out of range"),
        (HEADER + "XX,abc,2024,lifecycle,s\n", "bad number"),
        (HEADER + "XX,1,2024,b,s\n", "bad number or basis"),
        (HEADER + ",1,2024,lifecycle,s\n", "empty or duplicate"),
    ],
)
def test_from_csv_rejects_bad_tables(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "zones.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        StaticTableSource.from_csv(path)
