"""Rebuild `prices.csv` from the shared price data (see README.md in this folder).

    python -m connectors.gcp.data.build_prices <shared data dir> [--out <csv>]

`<shared data dir>` holds `prices/raw/anycloud-sh_catalog/gcp/vms.accelerators.csv` (GPU
prices, GPU only) and `vms.gpu_host_vms.csv` (host VM prices). On GCP a GPU VM costs its host
VM plus its accelerators, so each output row is one (region, machine type, accelerator type,
count) with the two prices added, per instance-hour; spot only when both sides have one. The
source has one row per zone; zones of a region agree, and where they did not the highest
price would be kept (a price that is too high only makes the broker cautious).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from connectors.gcp.catalog import N1_HOSTS, PriceCatalog

RAW = Path("prices/raw/anycloud-sh_catalog/gcp")
OUT = Path(__file__).resolve().parent / "prices.csv"

# SkyPilot accelerator names (the source's) -> GCP accelerator type names.
GCP_NAMES = {
    "A100": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "H100": "nvidia-h100-80gb",
    "H100-MEGA": "nvidia-h100-mega-80gb",
    "L4": "nvidia-l4",
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "P100": "nvidia-tesla-p100",
}
ATTACHED = ("T4", "V100", "P100")
G2_L4 = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}  # g2-standard-<vCPUs> -> L4s

Prices = dict[tuple[str, ...], tuple[float, float | None]]


def bundled(machine_type: str) -> tuple[str, int] | None:
    """The GPUs that come with an accelerator-optimized machine type, or None.

    A3 Ultra (H200) and A4 (B200) are left out: they boot only from Hyperdisk and are sold
    mostly through reservations, which this connector does not manage.
    """
    if m := re.fullmatch(r"a2-(highgpu|megagpu|ultragpu)-(\d+)g", machine_type):
        return ("A100-80GB" if m[1] == "ultragpu" else "A100", int(m[2]))
    if m := re.fullmatch(r"a3-highgpu-(\d+)g", machine_type):
        return ("H100", int(m[1]))
    if machine_type == "a3-megagpu-8g":
        return ("H100-MEGA", 8)
    if m := re.fullmatch(r"g2-standard-(\d+)", machine_type):
        gpus = G2_L4.get(int(m[1]))
        return ("L4", gpus) if gpus else None
    return None


def _price(text: str) -> float | None:
    return float(text) if text.strip() else None


def _read(path: Path, key: Sequence[str]) -> Prices:
    """Prices per key, the highest of a region's zones (they agree in the 2026-05-20 data)."""
    out: Prices = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            k = tuple(row[c] for c in key)
            price = _price(row["Price"])
            if price is None:
                continue
            spot = _price(row["SpotPrice"])
            old = out.get(k)
            if old is not None:
                price = max(price, old[0])
                spot = None if spot is None or old[1] is None else max(spot, old[1])
            out[k] = (price, spot)
    return out


def rows(shared: Path) -> Iterator[tuple[str, str, str, int, float, float | None]]:
    gcp = shared / RAW
    accels = _read(gcp / "vms.accelerators.csv", ("Region", "AcceleratorName", "AcceleratorCount"))
    hosts = _read(gcp / "vms.gpu_host_vms.csv", ("Region", "InstanceType"))
    for (region, machine_type), host in hosts.items():
        shapes = []
        if gpus := bundled(machine_type):
            shapes.append(gpus)
        for count, n1 in N1_HOSTS.items():
            if machine_type == n1:
                shapes.extend((name, count) for name in ATTACHED)
        for name, count in shapes:
            accel = accels.get((region, name, str(count)))
            if accel is None:
                continue
            spot = None if host[1] is None or accel[1] is None else host[1] + accel[1]
            yield region, machine_type, GCP_NAMES[name], count, host[0] + accel[0], spot


def build(shared: Path, out: Path) -> int:
    """Write the catalog; returns the number of rows."""
    table = sorted(rows(shared))
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(PriceCatalog.COLUMNS)
        for region, machine, accel, count, on_demand, spot in table:
            writer.writerow(
                [
                    region,
                    machine,
                    accel,
                    count,
                    f"{on_demand:.5f}",
                    "" if spot is None else f"{spot:.5f}",
                ]
            )
    return len(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path, help="the shared data directory")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="where to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if not (args.shared / RAW).is_dir():
        parser.error(f"{args.shared / RAW} does not exist")
    count = build(args.shared, args.out)
    print(f"wrote {count} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
