"""Build a replay fleet file from a real node list (Alibaba openb 2023 or the 2026 spot list).

    python -m broker.simulation.fleets openb|spot NODE_LIST OUT.yaml [--site NAME]
        [--region R] [--zone ZONE] [--location KEY] [--pue X] [--price USD]
        [--undisclosed-as MODEL]

One private `sim` site whose pools group the nodes by (GPU model, GPUs per node, CPU cores,
memory GB), each with its node count. The node lists carry no licence (the repository allows
"research or study purpose"), so nothing derived from them is committed: the tool reads the
user's copy and writes where it is told (the benchmark uses `simulation-out/`, git-ignored).

Stated assumptions (docs/simulation.md, "Saturated fleets from node lists", repeats them):

* **Price.** One flat amortised private price for every GPU, `DEFAULT_PRICE_USD` per
  GPU-hour: the order of `config/fleets/README.md`'s private clusters (an amortised A100 is
  about $1/GPU-hour there). One site and one price means the broker's cost term cannot tell
  pools apart; packing and power decide.
* **Grid.** Alibaba does not say where the cluster is. Default zone `HK` (453 gCO2e/kWh,
  lifecycle), the zone nearest mainland China in `carbon/data/zone_intensity.csv`; location
  `gcp:asia-east2` (Hong Kong) for latency. Both are flags.
* **CPU and memory.** openb: `cpu_milli / 1000` cores and `memory_mib / 1024` GB. Spot:
  `cpu_num` vCPUs; memory is not in the list, so `SPOT_MEMORY_GB_PER_CPU` GB per vCPU.
* **Models.** `broker.simulation.alibaba`: undisclosed models get a `gpu_models:` override
  with assumed power and memory, written as a comment above it, or `--undisclosed-as`.
* CPU-only nodes (openb `gpu` = 0) are left out and counted: pools hold GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.config import load_settings
from broker.domain.errors import ConfigError
from broker.simulation.alibaba import UnknownAlibabaModel, assumed, broker_model
from broker.simulation.sources import source_number, source_rows
from broker.simulation.traces import TraceError
from carbon.power import GPU_MODELS

REPO = Path(__file__).resolve().parents[2]
LATENCY_FILE = REPO / "config" / "latency.csv"

DEFAULT_PRICE_USD = 1.0  # flat amortised private price per GPU-hour (see the docstring)
DEFAULT_ZONE = "HK"  # the cluster's location is undisclosed (see the docstring)
DEFAULT_LOCATION = "gcp:asia-east2"
DEFAULT_REGION = "alibaba"
DEFAULT_PUE = 1.2  # the broker's default site PUE (connectors.settings.SiteSettings)
SPOT_MEMORY_GB_PER_CPU = 8  # spot list has no memory: 8 GB per vCPU (1 TB for 128 vCPUs)
MIB_PER_GB = 1024
MILLI_PER_CORE = 1000

FORMATS = ("openb", "spot")


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class NodeShape:
    """What a pool groups nodes by."""

    gpu_model: str  # the broker's name
    gpus: int
    cpu: float
    memory_gb: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeList:
    """Nodes counted by shape, and what was left out."""

    shapes: Counter[NodeShape]
    read: int
    cpu_only: int
    source_models: Counter[str]  # GPUs per Alibaba model name


class NodeListError(ValueError):
    """A node list cannot be read; the message names the file and line."""


def read_nodes(path: Path, *, fmt: str, undisclosed_as: str | None = None) -> NodeList:
    """The node list at `path` in `fmt` (`openb` or `spot`), counted by shape."""
    required = {
        "openb": ("cpu_milli", "memory_mib", "gpu", "model"),
        "spot": ("gpu_model", "gpu_capacity_num", "cpu_num"),
    }[fmt]
    shapes: Counter[NodeShape] = Counter()
    models: Counter[str] = Counter()
    read = cpu_only = 0
    try:
        for line, row in source_rows(path, required=required):
            read += 1
            if fmt == "openb":
                gpus = source_number(row, "gpu", path=path, line=line)
                cpu = source_number(row, "cpu_milli", path=path, line=line) / MILLI_PER_CORE
                memory = source_number(row, "memory_mib", path=path, line=line) / MIB_PER_GB
                model = row["model"]
            else:
                gpus = source_number(row, "gpu_capacity_num", path=path, line=line)
                cpu = source_number(row, "cpu_num", path=path, line=line)
                memory = cpu * SPOT_MEMORY_GB_PER_CPU
                model = row["gpu_model"]
            if gpus <= 0:
                cpu_only += 1
                continue
            try:
                name = broker_model(model, undisclosed_as=undisclosed_as)
            except UnknownAlibabaModel as exc:
                raise NodeListError(f"{path}: line {line}: {exc}") from None
            models[model.strip()] += int(gpus)
            shapes[NodeShape(gpu_model=name, gpus=int(gpus), cpu=cpu, memory_gb=memory)] += 1
    except TraceError as exc:  # the shared reader's: a missing file, column or number
        raise NodeListError(str(exc)) from exc
    except OSError as exc:
        raise NodeListError(f"cannot read {path}: {exc.strerror}") from exc
    return NodeList(shapes=shapes, read=read, cpu_only=cpu_only, source_models=models)


def _num(x: float) -> str:
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _memory_of(model: str) -> int:
    spec = assumed(model)
    return spec.memory_gb if spec is not None else GPU_MODELS[model].memory_gb


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteOptions:
    """Where the one private site is and what it charges (defaults: module constants)."""

    name: str
    region: str = DEFAULT_REGION
    zone: str = DEFAULT_ZONE
    location: str = DEFAULT_LOCATION
    pue: float = DEFAULT_PUE
    price_usd: float = DEFAULT_PRICE_USD


def render(nodes: NodeList, *, site: SiteOptions, source: str, latency_file: str | None) -> str:
    """The fleet YAML text (deterministic: pools sorted by model, then shape)."""
    gpus = sum(s.gpus * n for s, n in nodes.shapes.items())
    out = [
        f"# GENERATED by python -m broker.simulation.fleets from {source}; not for committing",
        "# (the node list has no licence file: research or study purpose only).",
        f"# {sum(nodes.shapes.values())} GPU nodes, {gpus} GPUs; {nodes.cpu_only} CPU-only "
        "nodes left out.",
        f"# Private price: flat {_num(site.price_usd)} USD/GPU-hour (illustrative, amortised).",
        f"# Grid zone {site.zone}, location {site.location}: ASSUMED (the cluster's location "
        "is undisclosed).",
    ]
    undisclosed = sorted({s.gpu_model for s in nodes.shapes if assumed(s.gpu_model)})
    if undisclosed:
        out += ["", "# ASSUMED figures for undisclosed GPU models (no datasheet exists):"]
        out.append("gpu_models:")
        for model in undisclosed:
            spec = assumed(model)
            assert spec is not None
            out.append(f"  # {model}: {spec.reason}")
            out.append(
                f"  {model}: {{board_power_w: {spec.board_power_w}, memory_gb: {spec.memory_gb}}}"
            )
    if latency_file is not None:
        out += ["", "latency:", f"  file: {latency_file}"]
    out += [
        "",
        "sites:",
        f"  - name: {site.name}",
        "    kind: sim",
        f"    region: {site.region}",
        f"    location: {site.location}",
        f'    grid_zone: "{site.zone}"',
        "    private: true",
        f"    pue: {_num(site.pue)}",
        "    pools:",
    ]
    for shape, count in sorted(nodes.shapes.items()):
        out.append(
            f"      - {{gpu_model: {shape.gpu_model}, gpu_memory_gb: {_memory_of(shape.gpu_model)},"
            f" gpus_per_node: {shape.gpus}, nodes: {count},"
        )
        out.append(
            f"         price_on_demand: {_num(site.price_usd)}, cpu_per_node: {_num(shape.cpu)},"
            f" memory_gb_per_node: {_num(shape.memory_gb)}}}"
        )
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m broker.simulation.fleets",
        description="Build a one-site replay fleet from an Alibaba node list.",
    )
    parser.add_argument("format", choices=FORMATS, help="openb (2023) or spot (2026) node list")
    parser.add_argument("node_list", type=Path, help="the node list CSV")
    parser.add_argument("output", type=Path, help="fleet YAML to write")
    parser.add_argument("--site", default=None, help="site name (default: alibaba-<format>)")
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument("--zone", default=DEFAULT_ZONE, help="grid zone (default: HK, assumed)")
    parser.add_argument("--location", default=DEFAULT_LOCATION, help="latency-matrix key")
    parser.add_argument("--pue", type=float, default=DEFAULT_PUE)
    parser.add_argument("--price", type=float, default=DEFAULT_PRICE_USD, help="USD/GPU-hour")
    parser.add_argument(
        "--undisclosed-as",
        default=None,
        metavar="MODEL",
        help="map undisclosed models (G1-G3, GPU-series-N) to this known model instead of "
        "writing gpu_models overrides with assumed figures",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    site = SiteOptions(
        name=args.site or f"alibaba-{args.format}",
        region=args.region,
        zone=args.zone,
        location=args.location,
        pue=args.pue,
        price_usd=args.price,
    )
    try:
        nodes = read_nodes(args.node_list, fmt=args.format, undisclosed_as=args.undisclosed_as)
        out_dir = args.output.resolve().parent
        latency = Path(os.path.relpath(LATENCY_FILE, out_dir)).as_posix()
        text = render(nodes, site=site, source=args.node_list.name, latency_file=latency)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        load_settings(args.output, env={})  # refuse to leave an invalid fleet behind
    except NodeListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        args.output.unlink(missing_ok=True)
        print(f"error: the fleet built is invalid (not kept): {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    gpus = sum(s.gpus * n for s, n in nodes.shapes.items())
    by_model = ", ".join(f"{m} {n}" for m, n in nodes.source_models.most_common())
    print(
        f"read {nodes.read} nodes; left out {nodes.cpu_only} CPU-only; wrote "
        f"{sum(nodes.shapes.values())} nodes, {gpus} GPUs in {len(nodes.shapes)} pools "
        f"({by_model})",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
