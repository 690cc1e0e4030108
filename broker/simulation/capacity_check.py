"""Can a fleet serve a trace at all? Demand per GPU-model list against the fleet's GPUs.

Before reading a replay's deadline misses as a scheduler's fault, check that some schedule
could meet them. For each GPU-model list a trace uses, this takes every job that can only
run on models of that list (its own list is a subset; "any model" counts as every model)
and compares with the fleet's GPUs of those models:

* **GPU-hours and mean load**: the jobs' GPU-hours, and the GPUs they keep busy on average
  over the submission window (GPU-hours / window). Above the fleet's GPUs, queues can only
  grow while jobs arrive.
* **Must-run peak**: a job with a deadline must be running throughout
  [deadline − duration, submit + duration) when that interval is not empty (it cannot start
  later than the first point nor end before the second). The most GPUs such jobs need at
  one instant is a hard floor: above the fleet's GPUs of those models, **no** schedule meets
  every deadline, whatever the order, preemption or deferral. Gangs are not packed onto
  nodes here, so the true need can only be higher.

    python -m broker.simulation.capacity_check --trace config/traces/itp-sample.csv \\
        --fleet config/fleets/realistic.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.config import load_settings
from broker.simulation.traces import TraceError, TraceJob, read_trace

ANY = "any"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDemand:
    """The jobs confined to one set of GPU models, against the fleet's GPUs of that set."""

    models: tuple[str, ...]  # sorted; the label of a job list ("H100|A100-80GB")
    jobs: int
    gpu_hours: float
    mean_busy_gpus: float  # gpu_hours over the submission window
    must_run_peak_gpus: float
    must_run_peak_at_s: float | None  # seconds from the trace start
    fleet_gpus: int

    @property
    def feasible(self) -> bool:
        """False when no schedule can meet every deadline of these jobs."""
        return self.must_run_peak_gpus <= self.fleet_gpus + 1e-9


def _gpus(job: TraceJob) -> float:
    return (job.gpu_fraction or job.gpus) * job.nodes


def _models(job: TraceJob, every: frozenset[str]) -> frozenset[str]:
    return frozenset(job.gpu_models) if job.gpu_models else every


def must_run_peak(jobs: Iterable[TraceJob]) -> tuple[float, float | None]:
    """The most GPUs that deadline-bound jobs must hold at one instant, and when (seconds)."""
    steps: list[tuple[float, float]] = []
    for job in jobs:
        if job.deadline_s is None:
            continue
        latest_start = job.deadline_s - job.duration_s
        earliest_end = job.submit_s + job.duration_s
        if latest_start < earliest_end:
            steps += [(latest_start, _gpus(job)), (earliest_end, -_gpus(job))]
    level = peak = 0.0
    at: float | None = None
    for t, delta in sorted(steps):  # at equal times, releases (negative) come first
        level += delta
        if level > peak + 1e-9:
            peak, at = level, t
    return peak, at


def analyse(jobs: Sequence[TraceJob], *, fleet_gpus: Mapping[str, int]) -> list[ModelDemand]:
    """One row per distinct GPU-model list in the trace, most GPU-hours first.

    `fleet_gpus` is the fleet's GPU count per model. Jobs asking for any model count against
    every model the fleet or the trace names.
    """
    every = frozenset(fleet_gpus) | frozenset(m for j in jobs for m in j.gpu_models)
    window = max((j.submit_s for j in jobs), default=0.0) - min(
        (j.submit_s for j in jobs), default=0.0
    )
    rows = []
    for models in {_models(j, every) for j in jobs}:
        confined = [j for j in jobs if _models(j, every) <= models]
        hours = sum(_gpus(j) * j.duration_s / 3600 for j in confined)
        peak, at = must_run_peak(confined)
        rows.append(
            ModelDemand(
                models=tuple(sorted(models)),
                jobs=len(confined),
                gpu_hours=hours,
                mean_busy_gpus=hours / (window / 3600) if window > 0 else 0.0,
                must_run_peak_gpus=peak,
                must_run_peak_at_s=at,
                fleet_gpus=sum(fleet_gpus.get(m, 0) for m in models),
            )
        )
    return sorted(rows, key=lambda r: (-r.gpu_hours, r.models))


def fleet_gpus_by_model(fleet: Path) -> dict[str, int]:
    """GPUs per model in a fleet file."""
    out: dict[str, int] = {}
    for site in load_settings(fleet, env={}).sites:
        for pool in site.pools:
            out[pool.gpu_model] = out.get(pool.gpu_model, 0) + pool.gpus_per_node * pool.nodes
    return out


def table(rows: Sequence[ModelDemand], *, every: frozenset[str]) -> str:
    """A Markdown table of the rows, as docs/simulation.md shows it."""
    lines = [
        "| jobs confined to | jobs | GPU-hours | mean busy GPUs | must-run peak (hour) "
        "| fleet GPUs | feasible |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = ANY if frozenset(r.models) == every else "\\|".join(r.models)
        at = "" if r.must_run_peak_at_s is None else f" (h {r.must_run_peak_at_s / 3600:.0f})"
        lines.append(
            f"| {label} | {r.jobs:,} | {r.gpu_hours:,.0f} | {r.mean_busy_gpus:,.0f} "
            f"| {r.must_run_peak_gpus:,.0f}{at} | {r.fleet_gpus:,} "
            f"| {'yes' if r.feasible else '**no**'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 when some list is infeasible)."""
    parser = argparse.ArgumentParser(
        prog="python -m broker.simulation.capacity_check",
        description="Trace demand per GPU-model list against a fleet's GPUs.",
    )
    parser.add_argument("--trace", type=Path, required=True, help="canonical trace CSV")
    parser.add_argument("--fleet", type=Path, required=True, help="fleet YAML")
    args = parser.parse_args(argv)
    try:
        jobs = read_trace(args.trace)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    gpus = fleet_gpus_by_model(args.fleet)
    rows = analyse(jobs, fleet_gpus=gpus)
    every = frozenset(gpus) | frozenset(m for j in jobs for m in j.gpu_models)
    print(table(rows, every=every))
    return 0 if all(r.feasible for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
