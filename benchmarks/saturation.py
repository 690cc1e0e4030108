"""Saturated replays on fleets built from real node lists: time, memory and packing.

    .venv/bin/python benchmarks/saturation.py [--jobs 12000] [--fleet openb|spot|both]
        [--seed 0] [--policy all] [--packing-weight W]

Builds (into `simulation-out/saturation/`, git-ignored; nothing derived from the node lists
is committed) a fleet from the Alibaba openb GPU node list and/or the 2026 spot node list
(`python -m broker.simulation.fleets`), converts the full ITP trace, derives a saturating
workload of N jobs for each fleet (`python -m broker.simulation.workloads`: all N arrive
within the first hour), runs `broker simulate` once per fleet, and prints jobs, GPUs, wall
seconds, peak RSS of the replay process and, from its `summary.json`, the allocation figures
per policy. Undisclosed models are mapped with `--undisclosed-as` to a stated known model
(benchmarks/README.md says which), so every pool has measured datasheet figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "data" / "traces"
NODE_LISTS = {
    "openb": TRACES / "alibaba_gpu_v2023" / "openb_node_list_gpu_node.csv",
    "spot": TRACES / "alibaba_spot_gpu_v2026" / "node_info_df.csv",
}
ITP = TRACES / "microsoft_itp_elasticflow" / "itp_raw_all_clusters.csv.gz"
# Undisclosed models as a stated known one, per fleet (see broker.simulation.alibaba).
UNDISCLOSED_AS = {"openb": "V100-32GB", "spot": "A100-80GB"}
PY = sys.executable
_WRAPPER = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, cwd=REPO)


def _figures(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per policy: allocation_ratio_mean, allocation_while_waiting.overall, first_wait."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "policy" in node and "allocation_ratio_mean" in node:
                waiting = node.get("allocation_while_waiting")
                found[str(node["policy"])] = {
                    "unfinished": node.get("unfinished"),
                    "allocation_ratio_mean": node["allocation_ratio_mean"],
                    "allocation_while_waiting.overall": (
                        waiting.get("overall") if isinstance(waiting, dict) else waiting
                    ),
                    "first_wait": node.get("first_wait"),
                }
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(summary)
    return found


def bench(
    fleet: str,
    *,
    jobs: int,
    seed: int,
    policy: str,
    out: Path,
    packing_weight: float | None = None,
) -> dict[str, Any]:
    fleet_file = out / f"{fleet}.yaml"
    workload = out / f"{fleet}-itp-{jobs}.csv"
    _run(
        [
            PY,
            "-m",
            "broker.simulation.fleets",
            fleet,
            str(NODE_LISTS[fleet]),
            str(fleet_file),
            "--undisclosed-as",
            UNDISCLOSED_AS[fleet],
        ]
    )
    itp = out / "itp-full.csv"
    if not itp.exists():
        _run([PY, "-m", "broker.simulation.convert", "itp", str(ITP), str(itp), "--seed", "0"])
    _run(
        [
            PY,
            "-m",
            "broker.simulation.workloads",
            str(itp),
            str(fleet_file),
            str(workload),
            "--jobs",
            str(jobs),
            "--seed",
            str(seed),
        ]
    )
    run_fleet = fleet_file
    if packing_weight is not None:  # the same fleet with the scheduler's packing weight set
        run_fleet = out / f"{fleet}-packing-{packing_weight:g}.yaml"
        run_fleet.write_text(
            fleet_file.read_text(encoding="utf-8")
            + f"\nscheduler: {{packing_weight: {packing_weight}}}\n",
            encoding="utf-8",
        )
    result = out / f"{fleet}-{jobs}"
    rss_file = out / f"{fleet}-{jobs}.maxrss"
    started = time.monotonic()
    # The replay runs under a small wrapper whose only child it is, so the wrapper's
    # RUSAGE_CHILDREN ru_maxrss (KiB on Linux) is the replay's own peak RSS.
    _run(
        [
            PY,
            "-c",
            _WRAPPER,
            str(rss_file),
            str(REPO / ".venv" / "bin" / "broker"),
            "simulate",
            "--trace",
            str(workload),
            "--fleet",
            str(run_fleet),
            "--policy",
            policy,
            "--out",
            str(result),
        ]
    )
    wall = time.monotonic() - started
    peak_mib = int(rss_file.read_text(encoding="utf-8")) / 1024
    gpus = sum(
        int(p["gpus_per_node"]) * int(p["nodes"])
        for s in _yaml_sites(fleet_file)
        for p in s.get("pools", [])
    )
    summary = json.loads((result / "summary.json").read_text(encoding="utf-8"))
    return {
        "fleet": fleet,
        "jobs": jobs,
        "gpus": gpus,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak_mib),
        "policies": _figures(summary),
    }


def _yaml_sites(path: Path) -> list[dict[str, Any]]:
    import yaml  # the service's own dependency; only needed to count GPUs

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(data.get("sites", []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12_000)
    parser.add_argument("--fleet", choices=("openb", "spot", "both"), default="openb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=("broker", "fifo", "all"), default="all")
    parser.add_argument("--out", type=Path, default=REPO / "simulation-out" / "saturation")
    parser.add_argument(
        "--packing-weight",
        type=float,
        default=None,
        help="scheduler.packing_weight for the replay (default: the setting's default)",
    )
    args = parser.parse_args()
    missing = [p for p in (*NODE_LISTS.values(), ITP) if not p.exists()]
    if missing:
        print(f"missing input(s): {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    fleets = ("openb", "spot") if args.fleet == "both" else (args.fleet,)
    for fleet in fleets:
        figures = bench(
            fleet,
            jobs=args.jobs,
            seed=args.seed,
            policy=args.policy,
            out=args.out,
            packing_weight=args.packing_weight,
        )
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
