"""Rebuild `prices.csv` from the shared flattened AWS price table.

    python -m connectors.aws.data.build_prices SOURCE_CSV [--out PATH]

SOURCE_CSV is `aws_gpu_prices_by_region.csv` (the ec2instances.info / instances.vantage.sh
dump, flattened one row per instance type and location; see README.md here). Kept: rows for
commercial regions (no Local/Wavelength zones, no GovCloud) whose accelerator is a GPU model
the broker knows (`carbon.power.GPU_MODELS`) in whole units, with a Linux on-demand price.
That drops fractional-GPU types (g6f, gr6f), AMD and Graviton-GPU types, and accelerators
that are not GPUs (Inferentia, Trainium). The spot column is the source's `spot_min` (the
cheapest zone), matching what the connector reads live from the spot price history.
Output is sorted by instance type then region, so a rebuild from the same input is
byte-identical.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from carbon.power import GPU_MODELS

SNAPSHOT_DATE = "2025-11-30"  # the source dump's commit date (prices README, "raw/")
COLUMNS = (
    "instance_type",
    "region",
    "gpu_model",
    "gpus",
    "on_demand_usd_h",
    "spot_usd_h",
    "snapshot_date",
)
DEFAULT_OUT = Path(__file__).resolve().parent / "prices.csv"


def select(rows: Iterable[Mapping[str, str]]) -> Iterator[tuple[str, ...]]:
    """Output rows for the source rows the connector can use."""
    for row in rows:
        count = row["accelerator_count"]
        if (
            row["region_kind"] != "region"
            or row["accelerator"] not in GPU_MODELS
            or not row["ondemand_linux_usd_hr"]
            or not count.isdigit()
            or int(count) < 1
        ):
            continue
        yield (
            row["instance_type"],
            row["region"],
            row["accelerator"],
            count,
            row["ondemand_linux_usd_hr"],
            row["spot_min_usd_hr"],
            SNAPSHOT_DATE,
        )


def build(source: Path, out: Path) -> int:
    """Write the catalog; returns the number of rows."""
    with source.open(newline="", encoding="utf-8") as fh:
        rows = sorted(set(select(csv.DictReader(fh))))
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path, help="aws_gpu_prices_by_region.csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: prices.csv here")
    args = parser.parse_args(argv)
    count = build(args.source, args.out)
    print(f"wrote {count} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
