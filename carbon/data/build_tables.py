"""Regenerate the shipped zone-intensity and cloud-region tables from the shared data folder.

The product ships a small annual-average table so that carbon-aware placement works with no
account at any data provider. A zone may have a row per accounting basis (operational,
lifecycle; see docs/carbon.md, "Accounting basis"):

* operational: Google's newest figure for the zone's Google Cloud region (Apache-2.0);
* life-cycle: Google's newest life-cycle figure (the 2019-2020 files, Apache-2.0) where that
  region existed then, else codecarbon's national life-cycle mix (MIT; Ember/OWID data,
  CC-BY-4.0) for a country zone.

Every number comes from a permissively licensed public file. Electricity Maps exports and
Let's Wait Awhile series are deliberately never read here: their licences do not allow
shipping them in a product (the replay reads them from the user's own copy instead).

The choices that need judgement (which cloud region stands for a zone, which regions map to
which zone) are written out as tables below, so a reviewer reads them in one place. Output is
deterministic: rows are sorted, numbers are rounded half-up from the source's decimal text,
and line endings are LF. Stdlib only, so it runs without the project installed:

    python carbon/data/build_tables.py [SHARED_CARBON_DIR] [--out-dir DIR]

SHARED_CARBON_DIR defaults to ``../shared/data/carbon`` relative to the repository root.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Final

ZONE_TABLE: Final = "zone_intensity.csv"
REGION_TABLE: Final = "cloud_regions.csv"

_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DEFAULT_SHARED_DIR: Final = _REPO_ROOT.parent / "shared" / "data" / "carbon"
DEFAULT_OUT_DIR: Final = Path(__file__).resolve().parent

_GOOGLE_DIR: Final = Path("raw/GoogleCloudPlatform_region-carbon-info/data")
_CODECARBON_MIX: Final = Path(
    "raw/mlco2_codecarbon/codecarbon/data/private_infra/global_energy_mix.json"
)
_ZONE_MAPPING: Final = Path("derived/cloud_region_to_emaps_zone.csv")

_OPERATIONAL: Final = "location-based operational"
_LIFECYCLE: Final = "location-based lifecycle"
_CENT: Final = Decimal("0.01")

# Zone -> the Google Cloud region whose published annual grid intensity stands for the zone.
# Where several regions share a zone (us-east4/us-east5, europe-west3/europe-west10,
# europe-west8/europe-west12) the older, larger region is the representative.
GOOGLE_ZONE_REGIONS: Final[Mapping[str, str]] = {
    "AU-NSW": "australia-southeast1",  # Sydney
    "AU-VIC": "australia-southeast2",  # Melbourne
    "BE": "europe-west1",  # St. Ghislain
    "BR": "southamerica-east1",  # Sao Paulo; EM zone BR is the national aggregate
    "CA-ON": "northamerica-northeast2",  # Toronto
    "CA-QC": "northamerica-northeast1",  # Montreal
    "CH": "europe-west6",  # Zurich
    "DE": "europe-west3",  # Frankfurt
    "ES": "europe-southwest1",  # Madrid
    "FI": "europe-north1",  # Hamina
    "FR": "europe-west9",  # Paris
    "GB": "europe-west2",  # London
    "HK": "asia-east2",  # Hong Kong
    "IL": "me-west1",  # Tel Aviv
    "IN-WE": "asia-south1",  # Mumbai, Western regional grid
    "IT-NO": "europe-west8",  # Milan, northern bidding zone
    "JP-KN": "asia-northeast2",  # Osaka, Kansai
    "JP-TK": "asia-northeast1",  # Tokyo, TEPCO area
    "KR": "asia-northeast3",  # Seoul
    "NL": "europe-west4",  # Eemshaven
    "PL": "europe-central2",  # Warsaw
    "SE": "europe-north2",  # Stockholm (SE3) stands for the national zone SE
    "SG": "asia-southeast1",  # Singapore
    "TW": "asia-east1",  # Changhua County
    "US-CAL-CISO": "us-west2",  # Los Angeles; see _ACCEPTED_LOW
    "US-CAR-SC": "us-east1",  # Berkeley County SC, Santee Cooper balancing area
    "US-CENT-SWPP": "us-central2",  # Pryor OK, Southwest Power Pool
    "US-MIDA-PJM": "us-east4",  # Ashburn VA
    "US-MIDW-MISO": "us-central1",  # Council Bluffs IA
    "US-NW-BPAT": "us-west1",  # The Dalles OR, Bonneville balancing area
    "US-NW-NEVP": "us-west4",  # Las Vegas, NV Energy
    "US-NW-PACE": "us-west3",  # Salt Lake City, PacifiCorp East
    "US-TEX-ERCO": "us-south1",  # Dallas
    "ZA": "africa-south1",  # Johannesburg
}

# Country zones whose life-cycle row is codecarbon's national figure (ISO 3166 alpha-3): the
# zones with no Google region (IE, NO) and those whose Google region opened after Google's
# last life-cycle file (2020). Operational rows for IE and NO do not exist licence-clean.
CODECARBON_ZONE_COUNTRIES: Final[Mapping[str, str]] = {
    "ES": "ESP",
    "FR": "FRA",
    "IE": "IRL",
    "IL": "ISR",
    "NO": "NOR",
    "SE": "SWE",
    "ZA": "ZAF",
}

# Region -> zone mappings beyond the shared hand-made mapping file. Every GCP region that
# represents a zone above must also map to it; _build_regions checks that.
EXTRA_REGION_ZONES: Final[tuple[tuple[str, str, str], ...]] = (
    ("aws", "af-south-1", "ZA"),  # Cape Town
    ("aws", "ap-east-1", "HK"),
    ("aws", "ap-northeast-1", "JP-TK"),
    ("aws", "ap-northeast-2", "KR"),
    ("aws", "ap-northeast-3", "JP-KN"),  # Osaka
    ("aws", "ap-southeast-1", "SG"),
    ("aws", "ap-southeast-2", "AU-NSW"),  # Sydney
    ("aws", "ap-southeast-4", "AU-VIC"),  # Melbourne
    ("aws", "ca-central-1", "CA-QC"),  # Montreal
    ("aws", "eu-central-2", "CH"),  # Zurich
    ("aws", "eu-north-1", "SE"),  # Stockholm
    ("aws", "eu-south-1", "IT-NO"),  # Milan
    ("aws", "eu-west-1", "IE"),  # Dublin
    ("aws", "il-central-1", "IL"),  # Tel Aviv
    ("aws", "us-west-2", "US-NW-BPAT"),  # Boardman OR, Bonneville balancing area
    ("gcp", "africa-south1", "ZA"),
    ("gcp", "asia-east1", "TW"),
    ("gcp", "asia-east2", "HK"),
    ("gcp", "asia-northeast1", "JP-TK"),
    ("gcp", "asia-northeast2", "JP-KN"),
    ("gcp", "asia-northeast3", "KR"),
    ("gcp", "asia-southeast1", "SG"),
    ("gcp", "australia-southeast1", "AU-NSW"),
    ("gcp", "australia-southeast2", "AU-VIC"),
    ("gcp", "europe-central2", "PL"),
    ("gcp", "europe-north1", "FI"),
    ("gcp", "europe-north2", "SE"),
    ("gcp", "europe-west1", "BE"),
    ("gcp", "europe-west12", "IT-NO"),  # Turin
    ("gcp", "europe-west4", "NL"),
    ("gcp", "europe-west6", "CH"),
    ("gcp", "europe-west8", "IT-NO"),
    ("gcp", "me-west1", "IL"),
    ("gcp", "northamerica-northeast1", "CA-QC"),
    ("gcp", "northamerica-northeast2", "CA-ON"),
    ("gcp", "us-central1", "US-MIDW-MISO"),
    ("gcp", "us-central2", "US-CENT-SWPP"),
    ("gcp", "us-east1", "US-CAR-SC"),
    ("gcp", "us-south1", "US-TEX-ERCO"),
    ("gcp", "us-west1", "US-NW-BPAT"),
    ("gcp", "us-west3", "US-NW-PACE"),
    ("gcp", "us-west4", "US-NW-NEVP"),
)

# Providers taken from the shared mapping file, and the confidence levels accepted from it.
_PROVIDERS: Final = frozenset({"aws", "gcp"})
_ACCEPTED_CONFIDENCE: Final = frozenset({"high", "medium"})
# Low-confidence rows kept anyway. gcp us-west2: Google's published figure for it (190 in
# 2021, 202 in 2022) sits within 6% of the CISO annual mean of Electricity Maps' direct
# intensity (206, 195), so Google accounts the Los Angeles region on the CISO grid.
_ACCEPTED_LOW: Final = frozenset({("gcp", "us-west2")})


def _half_up(value: Decimal) -> str:
    """Two decimals, rounded half-up, so output does not depend on binary floats."""
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _google_yearly_files(shared: Path) -> dict[int, Path]:
    """Google's yearly files by year; a later-commit folder may add newer years."""
    files: dict[int, Path] = {}
    for path in sorted((shared / _GOOGLE_DIR).glob("yearly*/*.csv")):
        if not re.fullmatch(r"\d{4}", path.stem):
            continue
        year = int(path.stem)
        if year in files:
            raise ValueError(f"two Google files for {year}: {files[year]} and {path}")
        files[year] = path
    if not files:
        raise FileNotFoundError(f"no Google yearly files under {shared / _GOOGLE_DIR}")
    return files


def read_google_year(path: Path) -> tuple[str, dict[str, Decimal]]:
    """(basis, region -> gCO2e/kWh) of one Google yearly file, basis read from the header."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    if header[0] != "Google Cloud Region" or len(header) != 4:
        raise ValueError(f"unexpected header in {path}: {header}")
    if header[3].startswith("Lifecycle"):
        basis = _LIFECYCLE
    elif header[3].startswith("Grid carbon intensity"):
        basis = _OPERATIONAL  # "average operational gross emissions" per Google's README
    else:
        raise ValueError(f"unknown intensity column in {path}: {header[3]}")
    return basis, {row[0]: Decimal(row[3]) for row in body if row and row[3]}


def read_codecarbon_mix(path: Path) -> dict[str, tuple[Decimal, int]]:
    """ISO3 -> (carbon_intensity gCO2/kWh, data year), numbers kept as decimal text."""
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle, parse_float=Decimal, parse_int=Decimal)
    return {
        iso: (Decimal(entry["carbon_intensity"]), int(entry["year"]))
        for iso, entry in raw.items()
        if entry.get("carbon_intensity") is not None and entry.get("year") is not None
    }


def _google_lifecycle(shared: Path) -> tuple[int, dict[str, Decimal]]:
    """(year, region -> value) of Google's newest file with a life-cycle column."""
    for year, path in sorted(_google_yearly_files(shared).items(), reverse=True):
        basis, values = read_google_year(path)
        if basis == _LIFECYCLE:
            return year, values
    raise FileNotFoundError("no Google yearly file with a life-cycle column")


def _render(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _build_zones(shared: Path) -> list[tuple[str, str, str, str, str]]:
    files = _google_yearly_files(shared)
    year = max(files)
    basis, google = read_google_year(files[year])
    lc_year, google_lc = _google_lifecycle(shared)
    mix = read_codecarbon_mix(shared / _CODECARBON_MIX)
    rows: list[tuple[str, str, str, str, str]] = []
    lifecycle: set[str] = set()
    for zone, region in GOOGLE_ZONE_REGIONS.items():
        if region not in google:
            raise KeyError(f"{region} (for {zone}) missing from Google {year}")
        source = f"google-region-carbon-info:{year}:{region}"
        rows.append((zone, _half_up(google[region]), str(year), basis, source))
        if region in google_lc:
            source = f"google-region-carbon-info:{lc_year}:{region}"
            rows.append((zone, _half_up(google_lc[region]), str(lc_year), _LIFECYCLE, source))
            lifecycle.add(zone)
    for zone, iso in CODECARBON_ZONE_COUNTRIES.items():
        if zone in lifecycle:
            raise ValueError(f"{zone} has both a Google and a codecarbon life-cycle row")
        value, data_year = mix[iso]
        source = f"codecarbon-global-energy-mix:{iso}"
        rows.append((zone, _half_up(value), str(data_year), _LIFECYCLE, source))
    return sorted(rows, key=lambda row: (row[0], row[3]))


def _build_regions(shared: Path, zones: Iterable[str]) -> list[tuple[str, str, str]]:
    mapping: dict[tuple[str, str], str] = {}
    with (shared / _ZONE_MAPPING).open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["provider"], row["region"])
            accepted = row["confidence"] in _ACCEPTED_CONFIDENCE or key in _ACCEPTED_LOW
            if row["provider"] in _PROVIDERS and accepted:
                mapping[key] = row["emaps_zone"]
    for provider, region, zone in EXTRA_REGION_ZONES:
        if (provider, region) in mapping:
            raise ValueError(f"{provider} {region} is already in {_ZONE_MAPPING}")
        mapping[(provider, region)] = zone
    for zone, region in GOOGLE_ZONE_REGIONS.items():
        if mapping.get(("gcp", region)) != zone:
            raise ValueError(f"gcp {region} represents {zone} but does not map to it")
    known = set(zones)
    unknown = sorted({zone for zone in mapping.values() if zone not in known})
    if unknown:
        raise ValueError(f"regions map to zones with no intensity row: {unknown}")
    return sorted((provider, region, zone) for (provider, region), zone in mapping.items())


def build(shared: Path) -> dict[str, str]:
    """File name -> exact CSV text of both tables, computed from the shared data folder."""
    zones = _build_zones(shared)
    regions = _build_regions(shared, (row[0] for row in zones))
    return {
        ZONE_TABLE: _render(("zone", "gco2_per_kwh", "year", "basis", "source"), zones),
        REGION_TABLE: _render(("provider", "region", "zone"), regions),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write both tables into the output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("shared_dir", nargs="?", type=Path, default=DEFAULT_SHARED_DIR)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    shared_dir: Path = args.shared_dir
    out_dir: Path = args.out_dir
    for name, text in build(shared_dir).items():
        target = out_dir / name
        target.write_bytes(text.encode("utf-8"))
        print(f"wrote {target} ({text.count(chr(10)) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
