"""Convert public GPU-cluster traces (Philly, Microsoft ITP) into the canonical trace CSV.

The Alibaba openb pod list (`openb`) has its own module, `broker.simulation.openb`: it
states CPU, memory, fractions, models and QoS, so nothing below is derived for it.

Both sources give only arrival time, run time, GPU count and a team (Philly virtual cluster,
ITP cluster id). Everything else the broker schedules on is derived here by a fixed,
documented rule (see docs/traces.md, which repeats these numbers):

* **Randomness.** Each job gets its own `random.Random(f"{source}:{seed}:{index}")`, where
  `index` is the job's 0-based data row in the source file, and always draws the same
  numbers in the same order. A job's derived fields therefore depend only on the seed and
  the job itself, never on which window or `--limit` was chosen. (Four `random()` draws for
  tier, models, fraction and home-or-not, then one `choice(ORIGINS)`, for every job.)
* **Gang shape.** `total` GPUs on `gpus_per_node`-GPU nodes (default 8):
  `nodes = ceil(total / gpus_per_node)`, `gpus = ceil(total / nodes)`.
* **Tier and kind.** A 1-GPU job no longer than `p1_max_duration_s` is P1 (inference) with
  probability `p1_probability`, else P3 (experiment). A multi-GPU job, or a 1-GPU job longer
  than 4 h, is P2 (training). Any other 1-GPU job is P2 with probability
  `mid_p2_probability`, else P3. The per-source numbers (`PROFILES`) were chosen so that the
  whole trace comes out near 10 % P1, 50 % P2, 40 % P3.
* **GPU models.** P1: `L4|A10G|T4`. P2 with ≥ 8 GPUs in total: `H100|A100-80GB`; P2 with 2–7:
  `H100|A100-80GB|A100|L40S`; 1-GPU P2: `A100|A100-80GB|L40S|A10G|L4` (25 %: any model).
  P3: `L4|A10G|T4|L40S` (50 %: any model).
* **Fractional GPUs.** 20 % of P1 jobs ask for 0.5 of a GPU and 10 % for 0.25.
* **Deadline.** P2 and P3: `submit + duration + slack` (slack `--deadline-slack-h`, 24 h by
  default). P1: none (P1 is latency-bound, not deadline-bound).
* **Origin.** P1 only. Each tenant has a home region drawn from `ORIGINS` with
  `random.Random(f"{source}:{seed}:tenant:{tenant}")`; a P1 job comes from its tenant's home
  with probability 0.7, else from a region drawn uniformly from `ORIGINS`.
* **Preemptible.** Empty: the tier default.

Jobs with no GPUs or a run time ≤ 0 are dropped and counted. A window (`--start-day`,
`--days`) keeps jobs submitted in `[day0 + D days, day0 + (D + N) days)`, where day 0 is
midnight of the earliest Philly timestamp, or ITP's collection start (time 0); `--limit`
then keeps the first N. `submit_s` is measured from the first kept job.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from broker.domain.enums import JobKind, Tier
from broker.simulation.alibaba import UnknownAlibabaModel
from broker.simulation.openb import convert_openb, openb_summary
from broker.simulation.sources import source_number, source_rows
from broker.simulation.traces import TraceError, TraceJob, write_trace

DAY_S = 86_400
LONG_JOB_S = 4 * 3600  # a 1-GPU job longer than this is training
ORIGINS: tuple[str, ...] = (
    "aws:us-east-1",
    "aws:us-west-2",
    "gcp:us-central1",
    "aws:eu-west-1",
    "gcp:europe-west1",
    "aws:eu-central-1",
    "aws:ap-northeast-1",
    "gcp:asia-south1",
)
HOME_ORIGIN_PROBABILITY = 0.7
P1_MODELS = ("L4", "A10G", "T4")
P2_BIG_MODELS = ("H100", "A100-80GB")
P2_MULTI_MODELS = ("H100", "A100-80GB", "A100", "L40S")
P2_SINGLE_MODELS = ("A100", "A100-80GB", "L40S", "A10G", "L4")
P2_SINGLE_ANY_PROBABILITY = 0.25
P3_MODELS = ("L4", "A10G", "T4", "L40S")
P3_ANY_PROBABILITY = 0.5
FRACTIONS = ((0.2, 0.5), (0.1, 0.25))  # (probability, fraction) for P1 jobs
KIND = {Tier.P1: JobKind.INFERENCE, Tier.P2: JobKind.TRAINING, Tier.P3: JobKind.EXPERIMENT}


@dataclass(frozen=True, slots=True, kw_only=True)
class TierProfile:
    """The per-source numbers of the tier rule (see the module docstring)."""

    p1_max_duration_s: int
    p1_probability: float
    mid_p2_probability: float


# Philly: 43 % of jobs are 1-GPU and ≤ 15 min, 44 % are 1-GPU between 15 min and 4 h.
# ITP has no job under 10 min: 20 % are 1-GPU and ≤ 1 h, 42 % 1-GPU between 1 h and 4 h.
PROFILES: dict[str, TierProfile] = {
    "philly": TierProfile(p1_max_duration_s=900, p1_probability=0.23, mid_p2_probability=0.84),
    "itp": TierProfile(p1_max_duration_s=3600, p1_probability=0.5, mid_p2_probability=0.30),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceJob:
    """A job as the source trace gives it; `t_s` is seconds from the source's day 0."""

    index: int
    t_s: float
    duration_s: int
    gpus: int
    tenant: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversion:
    """The converted jobs and what was left out."""

    jobs: list[TraceJob]
    read: int
    dropped_invalid: int  # no GPUs or run time ≤ 0
    outside_window: int  # outside --start-day/--days or beyond --limit


# Reading the sources.


def read_philly(path: Path) -> list[SourceJob]:
    """Pollux's philly.csv: timestamp, duration, num_gpus, gpu_time, cluster (the VC)."""
    raw: list[tuple[int, datetime, float, float, str]] = []
    for index, (line, row) in enumerate(
        source_rows(path, required=("timestamp", "duration", "num_gpus", "cluster"))
    ):
        try:
            ts = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S")
        except (TypeError, ValueError):
            raise TraceError(
                f"{path}: line {line}: column 'timestamp': expected YYYY-MM-DD HH:MM:SS, "
                f"got {row['timestamp']!r}",
                line=line,
                column="timestamp",
            ) from None
        duration = source_number(row, "duration", path=path, line=line)
        gpus = source_number(row, "num_gpus", path=path, line=line)
        raw.append((index, ts, duration, gpus, row["cluster"]))
    if not raw:
        return []
    day0 = min(ts for _, ts, _, _, _ in raw).replace(hour=0, minute=0, second=0)
    return [
        SourceJob(
            index=index,
            t_s=(ts - day0).total_seconds(),
            duration_s=math.ceil(duration),
            gpus=math.ceil(gpus),
            tenant=vc,
        )
        for index, ts, duration, gpus, vc in raw
    ]


def read_itp(path: Path) -> list[SourceJob]:
    """ElasticFlow ITP traces, all clusters: cluster, job_id, submission_time, duration, num_gpu."""
    jobs = []
    for index, (line, row) in enumerate(
        source_rows(path, required=("cluster", "submission_time", "duration", "num_gpu"))
    ):
        jobs.append(
            SourceJob(
                index=index,
                t_s=source_number(row, "submission_time", path=path, line=line),
                duration_s=math.ceil(source_number(row, "duration", path=path, line=line)),
                gpus=math.ceil(source_number(row, "num_gpu", path=path, line=line)),
                tenant=row["cluster"],
            )
        )
    return jobs


READERS = {"philly": read_philly, "itp": read_itp}


# Deriving what the sources lack.


def _tier(job: SourceJob, profile: TierProfile, u: float) -> Tier:
    if job.gpus == 1 and job.duration_s <= profile.p1_max_duration_s:
        return Tier.P1 if u < profile.p1_probability else Tier.P3
    if job.gpus >= 2 or job.duration_s > LONG_JOB_S:
        return Tier.P2
    return Tier.P2 if u < profile.mid_p2_probability else Tier.P3


def _models(tier: Tier, total_gpus: int, u: float) -> tuple[str, ...]:
    if tier is Tier.P1:
        return P1_MODELS
    if tier is Tier.P2:
        if total_gpus >= 8:
            return P2_BIG_MODELS
        if total_gpus >= 2:
            return P2_MULTI_MODELS
        return () if u < P2_SINGLE_ANY_PROBABILITY else P2_SINGLE_MODELS
    return () if u < P3_ANY_PROBABILITY else P3_MODELS


def _fraction(u: float) -> float | None:
    threshold = 0.0
    for probability, fraction in FRACTIONS:
        threshold += probability
        if u < threshold:
            return fraction
    return None


def home_origin(*, source: str, seed: int, tenant: str) -> str:
    """The region a tenant's P1 traffic mostly comes from."""
    return random.Random(f"{source}:{seed}:tenant:{tenant}").choice(ORIGINS)


def derive(
    job: SourceJob,
    *,
    source: str,
    seed: int,
    submit_s: float,
    deadline_slack_s: float,
    gpus_per_node: int,
) -> TraceJob:
    """The canonical job for one source job (pure: same inputs, same job)."""
    rng = random.Random(f"{source}:{seed}:{job.index}")
    u_tier, u_models, u_fraction, u_origin = (rng.random() for _ in range(4))
    origin_pick = rng.choice(ORIGINS)  # drawn for every job, used by some P1 jobs
    tier = _tier(job, PROFILES[source], u_tier)
    nodes = math.ceil(job.gpus / gpus_per_node)
    fraction = _fraction(u_fraction) if tier is Tier.P1 else None
    origin = None
    if tier is Tier.P1:
        home = home_origin(source=source, seed=seed, tenant=job.tenant)
        origin = home if u_origin < HOME_ORIGIN_PROBABILITY else origin_pick
    return TraceJob(
        job_id=f"{source}-{job.index:05d}",
        submit_s=submit_s,
        duration_s=job.duration_s,
        gpus=math.ceil(job.gpus / nodes),
        gpu_fraction=fraction,
        nodes=nodes,
        gpu_models=_models(tier, job.gpus, u_models),
        tier=tier,
        tenant=job.tenant,
        deadline_s=None if tier is Tier.P1 else submit_s + job.duration_s + deadline_slack_s,
        origin=origin,
        preemptible=None,
        kind=KIND[tier],
    )


def convert(
    source_jobs: Sequence[SourceJob],
    *,
    source: str,
    seed: int = 0,
    start_day: float | None = None,
    days: float | None = None,
    limit: int | None = None,
    deadline_slack_h: float = 24.0,
    gpus_per_node: int = 8,
) -> Conversion:
    """Drop invalid jobs, keep the window, derive the missing fields."""
    if source not in PROFILES:
        raise ValueError(f"unknown source {source!r}")
    valid = [j for j in source_jobs if j.gpus > 0 and j.duration_s > 0]
    lo = -math.inf if start_day is None else start_day * DAY_S
    hi = math.inf if days is None else (start_day or 0.0) * DAY_S + days * DAY_S
    kept = sorted((j for j in valid if lo <= j.t_s < hi), key=lambda j: (j.t_s, j.index))
    if limit is not None:
        kept = kept[:limit]
    t0 = kept[0].t_s if kept else 0.0
    jobs = [
        derive(
            j,
            source=source,
            seed=seed,
            submit_s=j.t_s - t0,
            deadline_slack_s=deadline_slack_h * 3600,
            gpus_per_node=gpus_per_node,
        )
        for j in kept
    ]
    return Conversion(
        jobs=jobs,
        read=len(source_jobs),
        dropped_invalid=len(source_jobs) - len(valid),
        outside_window=len(valid) - len(kept),
    )


def summary(result: Conversion) -> str:
    """A one-paragraph account of a conversion, for the CLI."""
    n = len(result.jobs)
    tiers = Counter(j.tier for j in result.jobs)
    shares = ", ".join(f"{t.value} {tiers[t]} ({tiers[t] / max(n, 1):.0%})" for t in Tier)
    return (
        f"read {result.read} jobs; dropped {result.dropped_invalid} with no GPUs or run time ≤ 0; "
        f"{result.outside_window} outside the window or limit; wrote {n} ({shares})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker trace convert",
        description="Convert a public GPU trace into the broker's canonical trace CSV.",
    )
    parser.add_argument(
        "source", choices=sorted((*READERS, "openb")), help="the input trace's format"
    )
    parser.add_argument("input", type=Path, help="source CSV (.gz is read as gzip)")
    parser.add_argument("output", type=Path, help="canonical trace CSV to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the derived fields")
    parser.add_argument("--limit", type=int, default=None, help="keep at most N jobs")
    parser.add_argument("--start-day", type=float, default=None, help="first day kept (0-based)")
    parser.add_argument("--days", type=float, default=None, help="number of days kept")
    parser.add_argument(
        "--deadline-slack-h", type=float, default=24.0, help="P2/P3 deadline slack (hours)"
    )
    parser.add_argument("--gpus-per-node", type=int, default=8, help="node size for gang jobs")
    parser.add_argument(
        "--undisclosed-as",
        default=None,
        metavar="MODEL",
        help="openb: undisclosed gpu_spec models (G1-G3) as this known model "
        "(as in python -m broker.simulation.fleets)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 0:
        print("--limit must be ≥ 0", file=sys.stderr)
        return 2
    if args.gpus_per_node < 1:
        print("--gpus-per-node must be ≥ 1", file=sys.stderr)
        return 2
    if args.source == "openb":
        return _main_openb(args)
    try:
        result = convert(
            READERS[args.source](args.input),
            source=args.source,
            seed=args.seed,
            start_day=args.start_day,
            days=args.days,
            limit=args.limit,
            deadline_slack_h=args.deadline_slack_h,
            gpus_per_node=args.gpus_per_node,
        )
        write_trace(args.output, result.jobs)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    print(summary(result), file=sys.stderr)
    return 0


def _main_openb(args: argparse.Namespace) -> int:
    try:
        result = convert_openb(
            args.input,
            undisclosed_as=args.undisclosed_as,
            start_day=args.start_day,
            days=args.days,
            limit=args.limit,
            deadline_slack_h=args.deadline_slack_h,
        )
        write_trace(args.output, result.jobs)
    except (TraceError, UnknownAlibabaModel) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    print(openb_summary(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
