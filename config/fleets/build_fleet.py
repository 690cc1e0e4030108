"""Generate the trace-replay fleets: private clusters plus capacity-limited AWS/GCP regions.

    python config/fleets/build_fleet.py [--fleet realistic|clean-room] [--prices PATH]
        [--output PATH]

`realistic` (the default) writes config/fleets/realistic.yaml; `clean-room` writes
config/fleets/clean-room.yaml, the same federation with its private clusters on clean grids
made CLEAN_ROOM_SCALE times larger (see config/fleets/README.md for why).

Standard library only and deterministic: the same price table gives the same bytes. Cloud
prices are real list prices from the shared price snapshot (`gpu_offers_long.csv`: AWS
2025-11-30, GCP 2026-05-20), per GPU-hour = instance price / GPUs in the instance. Grid
zones come from carbon/data/cloud_regions.csv. Private clusters use an amortised cost built
from the assumptions below (illustrative, not measured). Every zone must be in
carbon/data/zone_intensity.csv and every location in config/latency.csv, or this fails.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_PRICES = REPO.parent / "shared" / "data" / "prices" / "derived" / "gpu_offers_long.csv"
FLEETS = ("realistic", "clean-room")  # each is written to config/fleets/<name>.yaml

GPU_MEMORY_GB = {
    "H100": 80,
    "A100-80GB": 80,
    "A100": 40,
    "L40S": 48,
    "A10G": 24,
    "L4": 24,
    "T4": 16,
}
MIG = ("1g.10gb", "2g.20gb", "3g.40gb")  # A100-80GB / H100 80 GB profiles

# Cloud sites: (provider, region, PUE, instance types). PUE: the providers' published fleet
# averages (AWS 1.15, Google 1.10). GCP A100-80GB (a2-ultragpu) is left out because its
# list price is below the 40 GB A100's (price README quirk 4), and GCP H100 in regions
# with the suspect 4.20076 $/GPU-h accelerator price (quirk 3: us-central1, us-west1,
# asia-northeast1) is left out too.
CLOUDS: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("gcp", "europe-north1", 1.10, ("a3-highgpu-8g",)),
    ("aws", "eu-north-1", 1.15, ("p5.48xlarge", "g6e.48xlarge", "g6.48xlarge")),
    ("aws", "ca-central-1", 1.15, ("p4d.24xlarge", "g6.48xlarge", "g4dn.metal")),
    ("gcp", "northamerica-northeast1", 1.10, ("g2-standard-96",)),
    ("aws", "us-west-2", 1.15, ("p5.48xlarge", "p4de.24xlarge", "g6.48xlarge")),
    ("gcp", "europe-west1", 1.10, ("a3-highgpu-8g", "g2-standard-96")),
    ("aws", "us-east-1", 1.15, ("p5.48xlarge", "p4de.24xlarge", "g6.48xlarge", "g5.48xlarge")),
    ("gcp", "europe-west4", 1.10, ("a3-highgpu-8g", "a2-highgpu-8g", "g2-standard-96")),
    ("aws", "eu-central-1", 1.15, ("p4de.24xlarge", "g6e.48xlarge", "g6.48xlarge")),
    ("gcp", "us-central1", 1.10, ("a2-highgpu-8g", "g2-standard-96")),
    ("aws", "ap-northeast-1", 1.15, ("p5.48xlarge", "g5.48xlarge", "g4dn.metal")),
    ("gcp", "asia-south1", 1.10, ("a3-highgpu-8g", "g2-standard-96")),
)

# Cloud capacity: the nodes of one instance type the simulator lets the broker hold in a
# region at once. Training types (8 x H100, A100-80GB, A100 or L40S) get TRAINING_NODES: a
# quarter of the largest EC2 Capacity Block (64 instances), and the 128 p-instances the
# AWS regions hold together stay under the 256 AWS allows across an account's blocks.
# Inference types (8 x L4, A10G or T4) get INFERENCE_NODES. With 1-2 training nodes per
# region the ITP sample's load (about 1,090 GPUs busy on average, 860 of them H100 or
# A100-80GB) could not be served by any policy: docs/simulation.md has the sizing.
TRAINING_MODELS = frozenset({"H100", "A100-80GB", "A100", "L40S"})
TRAINING_NODES = 16
INFERENCE_NODES = 2

# clean-room.yaml: private clusters on grids below CLEAN_GRID_G (annual mean gCO2e/kWh in
# carbon/data/zone_intensity.csv: Oslo NO, Montreal CA-QC) have CLEAN_ROOM_SCALE times the
# nodes, so the pools the offline lower bound uses hold what it puts there.
CLEAN_GRID_G = 50.0
CLEAN_ROOM_SCALE = 20


def cloud_nodes(accelerator: str) -> int:
    """Nodes of an instance type with this accelerator that a region lets the broker hold."""
    return TRAINING_NODES if accelerator in TRAINING_MODELS else INFERENCE_NODES


# Private clusters: amortised $/GPU-hour = capex / (YEARS × 8760 h × UTILISATION) / GPUs,
# plus node power × PUE × local electricity price / GPUs, plus OPS_SHARE × the capex part
# (staff, space, network, support). Node prices and powers are round illustrative numbers
# for current servers, not quotes.
YEARS = 4
UTILISATION = 0.7
OPS_SHARE = 0.25


@dataclass(frozen=True)
class NodeType:
    gpu_model: str
    gpus_per_node: int
    capex_usd: float
    power_kw: float
    cpu: int
    memory_gb: int


NODE_TYPES = {
    "H100": NodeType("H100", 8, 280_000, 10.2, 224, 2048),
    "A100-80GB": NodeType("A100-80GB", 8, 160_000, 6.5, 256, 2048),
    "A100": NodeType("A100", 8, 120_000, 6.5, 256, 1024),
    "L40S": NodeType("L40S", 4, 60_000, 2.4, 64, 512),
    "L4": NodeType("L4", 4, 30_000, 0.9, 64, 256),
    "T4": NodeType("T4", 4, 16_000, 0.8, 48, 192),
}


@dataclass(frozen=True)
class Private:
    name: str
    region: str
    location: str  # nearest measured metro in config/latency.csv
    zone: str
    pue: float
    usd_per_kwh: float  # assumed industrial electricity price
    pools: tuple[tuple[str, int], ...]  # (node type, nodes)


PRIVATES = (
    Private("oslo-private", "oslo", "aws:eu-north-1", "NO", 1.15, 0.06, (("H100", 4), ("L4", 4))),
    Private(
        "montreal-private",
        "montreal",
        "gcp:northamerica-northeast1",
        "CA-QC",
        1.2,
        0.05,
        (("A100-80GB", 8), ("T4", 4)),
    ),
    Private(
        "warsaw-private", "warsaw", "gcp:europe-central2", "PL", 1.5, 0.16, (("A100", 8), ("L4", 4))
    ),
    Private(
        "ohio-private",
        "columbus",
        "aws:us-east-2",
        "US-MIDA-PJM",
        1.4,
        0.08,
        (("H100", 8), ("A100-80GB", 4), ("L40S", 4)),
    ),
)


@dataclass(frozen=True)
class Offer:
    accelerator: str
    count: int
    vcpus: float
    memory_gib: float
    ondemand: float
    spot: float | None
    zone: str
    snapshot: str


def load_offers(path: Path) -> dict[tuple[str, str, str], Offer]:
    """The cheapest on-demand offer per (cloud, region, instance type); ties by zone name."""
    best: dict[tuple[str, str, str], Offer] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["price_scope"] != "full_vm" or not row["instance_type"]:
                continue
            spot = float(row["spot_usd_hr"]) if row["spot_usd_hr"] else None
            offer = Offer(
                accelerator=row["accelerator"],
                count=int(float(row["accelerator_count"])),
                vcpus=float(row["vcpus"]),
                memory_gib=float(row["memory_gib"]),
                ondemand=float(row["ondemand_usd_hr"]),
                spot=spot,
                zone=row["zone"],
                snapshot=row["snapshot_date"],
            )
            key = (row["cloud"], row["region"], row["instance_type"])
            old = best.get(key)
            if old is None or (offer.ondemand, offer.zone) < (old.ondemand, old.zone):
                best[key] = offer
    return best


def read_column(path: Path, column: str) -> set[str]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row[column] for row in csv.DictReader(f)}


def cloud_zones() -> dict[tuple[str, str], str]:
    with (REPO / "carbon" / "data" / "cloud_regions.csv").open(encoding="utf-8") as f:
        return {(r["provider"], r["region"]): r["zone"] for r in csv.DictReader(f)}


def num(x: float) -> str:
    """Short, stable number text: at most 3 decimals, no trailing zeros."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def private_price(node: NodeType, site: Private) -> float:
    capex = node.capex_usd / (YEARS * 8760 * UTILISATION) / node.gpus_per_node
    energy = node.power_kw * site.pue * site.usd_per_kwh / node.gpus_per_node
    return capex * (1 + OPS_SHARE) + energy


def pool_line(
    *,
    model: str,
    gpus: int,
    nodes: int,
    on_demand: float,
    spot: float | None,
    cpu: float,
    memory: float,
    mig: tuple[str, ...] = (),
) -> list[str]:
    fields = [
        f"gpu_model: {model}",
        f"gpu_memory_gb: {GPU_MEMORY_GB[model]}",
        f"gpus_per_node: {gpus}",
        f"nodes: {nodes}",
        f"price_on_demand: {num(on_demand)}",
    ]
    if spot is not None:
        fields.append(f"price_spot: {num(spot)}")
    fields += [f"cpu_per_node: {num(cpu)}", f"memory_gb_per_node: {num(memory)}"]
    if mig:
        fields.append(f"mig_profiles: [{', '.join(mig)}]")
    lines: list[str] = []
    current = ""
    for field in fields:  # wrap like config/demo.yaml, under 100 columns
        if current and len(current) + len(field) > 80:
            lines.append(current + ",")
            current = ""
        current = f"{current}, {field}" if current else field
    lines.append(current)
    body = [f"         {line}" for line in lines]
    body[0] = "      - {" + lines[0]
    body[-1] += "}"
    return body


HEADER = """\
# GENERATED by config/fleets/build_fleet.py{flag}; do not edit by hand
# (see config/fleets/README.md).
#
{what}
# Grid zones are Electricity Maps ids with an intensity in carbon/data/zone_intensity.csv;
# locations are keys of config/latency.csv.
#
# Cloud prices: real list prices per GPU-hour = instance price / GPUs in the instance, from
# shared/data/prices/derived/gpu_offers_long.csv (AWS snapshot {aws_date}, spot = mean over
# AZs; GCP snapshot {gcp_date}, VM + accelerator, cheapest zone of the region). A spot price
# is left out where the snapshot shows no discount. Cloud node counts are the capacity the
# simulator lets the broker hold in a region at once: {training} nodes of each 8-GPU training
# type, {inference} of each inference type.
#
# Private prices: amortised, illustrative: node capex over {years} years at {util:.0%} utilisation,
# plus {ops:.0%} for operations, plus node power x PUE x an assumed local electricity price.
"""

WHAT = {
    "realistic": """\
# A realistic federation for trace replay: {n_private} private clusters and {n_cloud}
# capacity-limited AWS/GCP regions, kind `sim`, spanning clean (SE, CA-QC, FI, NO) and dirty
# (IN-WE, PL, JP-TK, US-MIDW-MISO) grids.""",
    "clean-room": """\
# realistic.yaml with room at the clean sites: the private clusters on grids below
# {clean_g:g} gCO2e/kWh ({clean_sites}) have {scale} times the nodes; everything else,
# prices included, is the same. For comparing the broker with the offline lower bound.""",
}


def clean_privates(intensity: dict[str, float]) -> frozenset[str]:
    """Names of the private clusters whose grid's annual mean is below CLEAN_GRID_G."""
    return frozenset(p.name for p in PRIVATES if intensity[p.zone] < CLEAN_GRID_G)


def read_intensity() -> dict[str, float]:
    with (REPO / "carbon" / "data" / "zone_intensity.csv").open(encoding="utf-8") as f:
        return {r["zone"]: float(r["gco2_per_kwh"]) for r in csv.DictReader(f)}


def build(prices: Path, *, fleet: str = "realistic") -> str:
    """The YAML text of one fleet (`realistic` or `clean-room`)."""
    if fleet not in FLEETS:
        raise ValueError(f"unknown fleet {fleet!r}; known: {', '.join(FLEETS)}")
    offers = load_offers(prices)
    zones = cloud_zones()
    intensity = read_intensity()
    locations = read_column(REPO / "config" / "latency.csv", "src") | read_column(
        REPO / "config" / "latency.csv", "dst"
    )
    scaled = clean_privates(intensity) if fleet == "clean-room" else frozenset()
    dates = {c: {o.snapshot for k, o in offers.items() if k[0] == c} for c in ("aws", "gcp")}
    out = [
        HEADER.format(
            flag="" if fleet == "realistic" else f" --fleet {fleet}",
            what=WHAT[fleet].format(
                n_private=len(PRIVATES),
                n_cloud=len(CLOUDS),
                clean_g=CLEAN_GRID_G,
                clean_sites=", ".join(p.name for p in PRIVATES if p.name in scaled),
                scale=CLEAN_ROOM_SCALE,
            ),
            aws_date="/".join(sorted(dates["aws"])),
            gcp_date="/".join(sorted(dates["gcp"])),
            training=TRAINING_NODES,
            inference=INFERENCE_NODES,
            years=YEARS,
            util=UTILISATION,
            ops=OPS_SHARE,
        ),
        "latency:",
        "  file: ../latency.csv",
        "",
        "sites:",
    ]

    def check(zone: str, location: str) -> None:
        if zone not in intensity:
            raise SystemExit(f"grid zone {zone} is not in carbon/data/zone_intensity.csv")
        if location not in locations:
            raise SystemExit(f"location {location} is not in config/latency.csv")

    for site in PRIVATES:
        check(site.zone, site.location)
        scale = CLEAN_ROOM_SCALE if site.name in scaled else 1
        out += [
            f"  - name: {site.name}",
            "    kind: sim",
            f"    region: {site.region}",
            f"    location: {site.location}      # nearest measured metro, for latency",
            f'    grid_zone: "{site.zone}"',
            "    private: true",
            f"    pue: {site.pue}",
            f"    # amortised; electricity assumed {site.usd_per_kwh} USD/kWh",
        ]
        if scale > 1:
            out.append(f"    # clean grid: {scale} times the nodes of realistic.yaml")
        out.append("    pools:")
        for node_type, nodes in site.pools:
            node = NODE_TYPES[node_type]
            out += pool_line(
                model=node.gpu_model,
                gpus=node.gpus_per_node,
                nodes=nodes * scale,
                on_demand=private_price(node, site),
                spot=None,
                cpu=node.cpu,
                memory=node.memory_gb,
                mig=MIG if GPU_MEMORY_GB[node.gpu_model] == 80 else (),
            )
        out.append("")

    for cloud, region, pue, instance_types in CLOUDS:
        zone, location = zones[(cloud, region)], f"{cloud}:{region}"
        check(zone, location)
        out += [
            f"  - name: {cloud}-{region}",
            "    kind: sim",
            f"    region: {region}",
            f"    location: {location}",
            f'    grid_zone: "{zone}"',
            f"    pue: {pue}",
            "    pools:",
        ]
        for instance_type in instance_types:
            o = offers[(cloud, region, instance_type)]
            spot = o.spot / o.count if o.spot is not None and 0 < o.spot < o.ondemand else None
            where = f" {o.zone}" if o.zone else ""
            out.append(
                f"      # {instance_type}{where} ({o.snapshot}): {num(o.ondemand)} USD/h on-demand"
                + (f", {num(o.spot)} spot" if o.spot is not None else ", no spot price")
                + (" (no discount: left out)" if o.spot is not None and spot is None else "")
            )
            out += pool_line(
                model=o.accelerator,
                gpus=o.count,
                nodes=cloud_nodes(o.accelerator),
                on_demand=o.ondemand / o.count,
                spot=spot,
                cpu=o.vcpus,
                memory=o.memory_gib,
            )
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", choices=FLEETS, default="realistic")
    parser.add_argument("--prices", type=Path, default=DEFAULT_PRICES)
    parser.add_argument(
        "--output", type=Path, default=None, help="default: config/fleets/<fleet>.yaml"
    )
    args = parser.parse_args(argv)
    output = args.output or HERE / f"{args.fleet}.yaml"
    output.write_text(build(args.prices, fleet=args.fleet), encoding="utf-8")
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
