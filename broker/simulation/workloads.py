"""Derive a saturating workload for a fleet from a canonical trace (Philly or ITP).

    python -m broker.simulation.workloads TRACE FLEET OUT.csv [--jobs N] [--seed S]
        [--window-s SECONDS]

The sources give run times, GPU counts and gangs; what a packing test also needs (CPU and
memory per job, fractional GPUs, GPU-model constraints matching the fleet, arrivals dense
enough to fill it) is derived here by the rules below. Every number is a named constant.

* **Jobs.** The first `--jobs` N jobs of the trace (by submit time); run time, GPUs, gang,
  tier, tenant, origin, kind and preemptible are kept.
* **Arrivals.** Submit times are compressed linearly into `[0, ARRIVAL_WINDOW_S]` in their
  order, so all N arrive within the first hour and the fleet saturates. A deadline keeps its
  slack (deadline − submit).
* **Fractional GPUs.** A single-node 1-GPU job asks for a fraction with probability
  `FRACTION_SHARE`, drawn uniformly from `FRACTIONS`; every other job asks for whole GPUs
  (the source's own fractions are replaced).
* **GPU models.** With probability `PIN_SHARE` a job is pinned to one model, drawn with
  weights = the fleet's GPUs of each model among the models with a node shape that holds
  the job's GPUs, CPU and memory per node; otherwise any model. (The source's synthetic
  model lists name cloud parts the fleet may not have, so they are replaced.)
* **CPU and memory.** Per requested GPU (or fraction of one), a share drawn from
  `REQUEST_SHARES` of the fleet's CPU cores (memory GB) per GPU, itself the GPU-weighted
  median over pools of `cpu_per_node / gpus_per_node` (`memory_gb_per_node / ...`); CPU
  and memory are drawn independently, rounded up to `CPU_STEP` cores and whole GB, at least
  `MIN_CPU` and `MIN_MEMORY_GB`.
* **Randomness.** Each job has its own `random.Random(f"workload:{seed}:{job_id}")` making
  the same six draws in the same order, so a job's derived fields depend only on the seed
  and the job, never on N or the fleet's other jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.config import Settings, load_settings
from broker.domain.errors import ConfigError
from broker.simulation.traces import TraceError, TraceJob, read_trace, write_trace

ARRIVAL_WINDOW_S = 3600.0  # all N jobs arrive within the first hour: the fleet saturates
PIN_SHARE = 1 / 3  # about a third of openb GPU pods name a GPU type (FGD paper, sec. 6.5)
FRACTION_SHARE = 0.3  # share of single-node 1-GPU jobs asking for part of a GPU
FRACTIONS = (0.25, 0.5, 0.75)  # the parts such a job asks for, uniformly
# (share of the fleet's per-GPU CPU or memory, probability): most jobs ask for less than
# their GPUs' share of the node, some for all of it.
REQUEST_SHARES = ((0.25, 0.3), (0.5, 0.4), (1.0, 0.3))
CPU_STEP = 0.5  # cores are rounded up to half cores
MIN_CPU = 0.5  # cores
MIN_MEMORY_GB = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetProfile:
    """What the rules read from a fleet."""

    gpus_by_model: Mapping[str, int]
    node_shapes: Mapping[str, tuple[tuple[int, float, float], ...]]  # (GPUs, CPU, GB)
    cpu_per_gpu: float
    memory_gb_per_gpu: float


def _weighted_median(values: Sequence[tuple[float, int]]) -> float:
    ordered = sorted(values)
    total = sum(w for _, w in ordered)
    seen = 0
    for value, weight in ordered:
        seen += weight
        if 2 * seen >= total:
            return value
    raise ValueError("no values")


def fleet_profile(settings: Settings) -> FleetProfile:
    """GPUs and node shapes per model, and per-GPU CPU and memory of a fleet."""
    pools = [p for s in settings.sites for p in s.pools]
    if not pools:
        raise ValueError("the fleet has no pools")
    gpus: Counter[str] = Counter()
    shapes: dict[str, set[tuple[int, float, float]]] = {}
    cpu: list[tuple[float, int]] = []
    memory: list[tuple[float, int]] = []
    for p in pools:
        n = p.gpus_per_node * p.nodes
        gpus[p.gpu_model] += n
        shapes.setdefault(p.gpu_model, set()).add(
            (p.gpus_per_node, p.cpu_per_node, p.memory_gb_per_node)
        )
        cpu.append((p.cpu_per_node / p.gpus_per_node, n))
        memory.append((p.memory_gb_per_node / p.gpus_per_node, n))
    return FleetProfile(
        gpus_by_model=dict(sorted(gpus.items())),
        node_shapes={m: tuple(sorted(v)) for m, v in sorted(shapes.items())},
        cpu_per_gpu=_weighted_median(cpu),
        memory_gb_per_gpu=_weighted_median(memory),
    )


def _share(u: float) -> float:
    threshold = 0.0
    for share, probability in REQUEST_SHARES:
        threshold += probability
        if u < threshold:
            return share
    return REQUEST_SHARES[-1][0]


def _pick_model(
    *, gpus: int, cpu: float, memory_gb: float, fleet: FleetProfile, u: float
) -> str | None:
    fits = [
        (m, n)
        for m, n in fleet.gpus_by_model.items()
        if any(g >= gpus and c >= cpu and gb >= memory_gb for g, c, gb in fleet.node_shapes[m])
    ]
    total = sum(n for _, n in fits)
    threshold = 0.0
    for model, n in fits:
        threshold += n / total
        if u < threshold:
            return model
    return fits[-1][0] if fits else None


def derive_job(job: TraceJob, *, fleet: FleetProfile, seed: int, submit_s: float) -> TraceJob:
    """One workload job (pure: same inputs, same job)."""
    rng = random.Random(f"workload:{seed}:{job.job_id}")
    u_pin, u_model, u_frac, u_part, u_cpu, u_mem = (rng.random() for _ in range(6))
    single = job.gpus == 1 and job.nodes == 1
    fraction = (
        FRACTIONS[int(u_part * len(FRACTIONS))] if single and u_frac < FRACTION_SHARE else None
    )
    per_node = fraction if fraction is not None else float(job.gpus)
    cpu = max(
        MIN_CPU, math.ceil(per_node * fleet.cpu_per_gpu * _share(u_cpu) / CPU_STEP) * CPU_STEP
    )
    memory = max(
        MIN_MEMORY_GB, float(math.ceil(per_node * fleet.memory_gb_per_gpu * _share(u_mem)))
    )
    model = None
    if u_pin < PIN_SHARE:  # only models with a node that holds the whole per-node request
        model = _pick_model(gpus=job.gpus, cpu=cpu, memory_gb=memory, fleet=fleet, u=u_model)
    return dataclasses.replace(
        job,
        submit_s=submit_s,
        gpu_fraction=fraction,
        gpu_models=(model,) if model else (),
        deadline_s=None if job.deadline_s is None else submit_s + (job.deadline_s - job.submit_s),
        cpu=cpu,
        memory_gb=memory,
    )


def derive(
    jobs: Sequence[TraceJob],
    *,
    fleet: FleetProfile,
    seed: int = 0,
    limit: int | None = None,
    window_s: float = ARRIVAL_WINDOW_S,
) -> list[TraceJob]:
    """The first `limit` jobs, arrivals compressed into `window_s`, fields derived."""
    kept = sorted(jobs, key=lambda j: j.submit_s)[:limit]
    if not kept:
        return []
    t0, span = kept[0].submit_s, kept[-1].submit_s - kept[0].submit_s
    scale = window_s / span if span > 0 else 0.0
    return [
        derive_job(j, fleet=fleet, seed=seed, submit_s=round((j.submit_s - t0) * scale, 3))
        for j in kept
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m broker.simulation.workloads",
        description="Derive a saturating workload for a fleet from a canonical trace.",
    )
    parser.add_argument("trace", type=Path, help="canonical trace CSV (e.g. converted ITP)")
    parser.add_argument("fleet", type=Path, help="fleet YAML the workload is sized for")
    parser.add_argument("output", type=Path, help="canonical trace CSV to write")
    parser.add_argument("--jobs", type=int, default=None, help="keep the first N jobs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the derived fields")
    parser.add_argument(
        "--window-s", type=float, default=ARRIVAL_WINDOW_S, help="arrival window (seconds)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.jobs is not None and args.jobs < 0:
        print("--jobs must be ≥ 0", file=sys.stderr)
        return 2
    try:
        fleet = fleet_profile(load_settings(args.fleet, env={}))
        source = read_trace(args.trace)
        jobs = derive(source, fleet=fleet, seed=args.seed, limit=args.jobs, window_s=args.window_s)
        write_trace(args.output, jobs)
    except (ConfigError, TraceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    gpus = sum(j.gpu_total for j in jobs)
    pinned = sum(1 for j in jobs if j.gpu_models)
    fractional = sum(1 for j in jobs if j.gpu_fraction is not None)
    print(
        f"read {len(source)} jobs; wrote {len(jobs)} ({gpus:,.2f} GPUs requested, "
        f"{pinned} pinned to a model, {fractional} fractional) arriving within "
        f"{args.window_s:g} s; fleet {sum(fleet.gpus_by_model.values())} GPUs, "
        f"{fleet.cpu_per_gpu:g} cores and {fleet.memory_gb_per_gpu:g} GB per GPU",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
