"""Placement throughput: the pure engine on one core, and the scheduling loop on a database.

- engine: `Engine.plan` over a whole synthetic queue (default 10,000 pending jobs) and a
  synthetic fleet (default 200 sites x 8 GPU models), in this process, one thread, with
  deferral on and off. Reports decisions per second (every job decided: placed, deferred
  or left waiting, divided by the pass's wall time) and per-decision latency, the median
  of a few repetitions. Each repetition plans from the same empty ledger: the engine is
  pure, so repetitions are independent.
- loop: the same fleet and jobs in a fresh database (a temp SQLite file, or a throwaway
  PostgreSQL database on postgres@127.0.0.1:5432), then `SchedulingLoop.run_once` until
  the queue is drained or the fleet is full, with a connector whose dispatch returns at
  once. Reports jobs committed per second (decide + commit, dispatch bookkeeping included)
  and how the wall time splits between the engine, the store's reads and its writes.

The fleet and the queue are seeded, so two runs with the same flags see the same input.
Run `python benchmarks/placement.py --help`; benchmarks/README.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pgtemp import HOST, pg_database, postgres_unreachable

from broker.domain.clock import ManualClock
from broker.domain.engine import Decision, Defer, Engine, Place, Wait
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.scheduling.conditions import HourlyTable
from broker.scheduling.loop import SchedulingLoop
from broker.scheduling.settings import SchedulerSettings, engine_settings
from carbon.base import IntensityReading
from carbon.power import GPU_MODELS
from connectors.base import BuildContext, Connector, SiteInventory, StatusUpdate
from connectors.settings import SiteSettings

ROOT = Path(__file__).resolve().parents[1]
LATENCY_CSV = ROOT / "config" / "latency.csv"
ZONES_CSV = ROOT / "carbon" / "data" / "zone_intensity.csv"
# A fixed planning instant (on the hour), so the carbon series and deadlines are the same
# on every run; the loop's clock is a ManualClock standing still at this time.
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HORIZON_H = 48  # SchedulerSettings.deferral_horizon_h's default
PROBE_JOBS = 100  # jobs planned once to estimate how long a full pass takes
TENANTS = tuple(f"team-{i}" for i in range(8))

Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class Model:
    """A GPU model as the synthetic fleet offers it: list price per GPU-hour, node sizes."""

    name: str
    price: float  # USD per GPU-hour on demand, roughly public cloud list prices in 2025
    node_sizes: tuple[int, ...]


MODELS = (
    Model("H100", 4.00, (8,)),
    Model("A100-80GB", 2.50, (8,)),
    Model("A100", 1.80, (8, 4)),
    Model("L40S", 1.50, (8, 4)),
    Model("L4", 0.80, (8, 4)),
    Model("A10G", 1.00, (8, 4)),
    Model("T4", 0.50, (8, 4)),
    Model("V100", 2.40, (8, 4)),
)


# ---- synthetic input -----------------------------------------------------------------------


def load_latency() -> LatencyMatrix:
    with LATENCY_CSV.open(newline="", encoding="utf-8") as f:
        return LatencyMatrix.from_rows(
            (r["src"], r["dst"], float(r["rtt_ms"])) for r in csv.DictReader(f)
        )


def load_zones() -> dict[str, float]:
    with ZONES_CSV.open(newline="", encoding="utf-8") as f:
        return {r["zone"]: float(r["gco2_per_kwh"]) for r in csv.DictReader(f)}


def build_fleet(
    rng: random.Random, *, sites: int, locations: Sequence[str], zones: Sequence[str]
) -> tuple[list[Site], list[GpuPool]]:
    """`sites` sites, each with one pool of every model in MODELS; 1 in 5 is private."""
    out_sites: list[Site] = []
    pools: list[GpuPool] = []
    for i in range(sites):
        location = locations[i % len(locations)]
        cloud, _, region = location.partition(":")
        private = i % 5 == 0
        site = Site(
            name=f"site-{i:03d}",
            kind=SiteKind.KUBERNETES if private else SiteKind(cloud),
            region=region,
            location=location,
            grid_zone=rng.choice(zones),
            private=private,
            pue=round(rng.uniform(1.1, 1.5), 2),
        )
        out_sites.append(site)
        for m in MODELS:
            on_demand = round(m.price * rng.uniform(0.8, 1.3), 3)
            spot = None if private or rng.random() < 0.3 else round(on_demand * 0.35, 3)
            pools.append(
                GpuPool(
                    id=f"{site.name}-{m.name.lower()}",
                    site=site.name,
                    gpu_model=m.name,
                    gpu_memory_gb=GPU_MODELS[m.name].memory_gb,
                    gpus_per_node=rng.choice(m.node_sizes),
                    nodes=rng.randint(2, 16),
                    price_on_demand=on_demand,
                    price_spot=spot,
                )
            )
    return out_sites, pools


def build_jobs(rng: random.Random, *, n: int, locations: Sequence[str]) -> list[Job]:
    """A seeded mix: 15 % P1 (most with an origin and a latency SLO), 50 % P2, 35 % P3."""
    names = [m.name for m in MODELS]
    jobs = []
    for i in range(n):
        tier = rng.choices((Tier.P1, Tier.P2, Tier.P3), weights=(15, 50, 35))[0]
        gpus = rng.choices((1, 2, 4, 8), weights=(45, 25, 18, 12))[0]
        nodes = 2 if gpus == 8 and rng.random() < 0.25 else 1
        duration = rng.randint(600, 12 * 3600)
        origin = slo = deadline = None
        if tier is Tier.P1 and rng.random() < 0.8:
            origin, slo = rng.choice(locations), float(rng.choice((80, 150, 250)))
        elif rng.random() < 0.1:
            origin = rng.choice(locations)  # latency counts in the score, no SLO
        if tier is not Tier.P1 and rng.random() < 0.3:
            deadline = NOW + timedelta(seconds=duration + rng.randint(2 * 3600, 36 * 3600))
        created = NOW - timedelta(seconds=rng.randint(0, 7200))
        spec = JobSpec(
            name=f"bench-{i}",
            tier=tier,
            kind={Tier.P1: JobKind.INFERENCE, Tier.P2: JobKind.TRAINING}.get(
                tier, JobKind.EXPERIMENT
            ),
            resources=Resources(
                gpus=gpus,
                gpu_models=tuple(rng.sample(names, rng.randint(1, 3))),
                nodes=nodes,
                cpu=float(4 * gpus),
                memory_gb=float(32 * gpus),
            ),
            workload=Workload(image="ghcr.io/example/bench:1"),
            estimated_duration_s=duration,
            deadline=deadline,
            latency_slo_ms=slo,
            origin=origin,
        )
        jobs.append(
            Job(
                id=f"job-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                tenant=rng.choice(TENANTS),
                spec=spec,
                state=JobState.PENDING,
                created_at=created,
                updated_at=created,
            )
        )
    return jobs


def carbon_series(
    rng: random.Random, zones: dict[str, float], *, flat: bool
) -> dict[str, list[tuple[datetime, float]]]:
    """Hourly intensity per zone over the horizon: the zone's annual mean, +-30 % daily swing.

    The swing (a sine with a seeded phase per zone) is what gives deferral something to
    find; `flat` drops it, so no job is ever deferred.
    """
    out = {}
    for zone, mean in zones.items():
        phase = rng.uniform(0, 2 * math.pi)
        out[zone] = [
            (
                NOW + timedelta(hours=h),
                mean if flat else mean * (1 + 0.3 * math.sin(2 * math.pi * h / 24 + phase)),
            )
            for h in range(HORIZON_H + 1)
        ]
    return out


@dataclass(frozen=True, slots=True)
class Scenario:
    sites: list[Site]
    pools: list[GpuPool]
    jobs: list[Job]
    latency: LatencyMatrix
    series: dict[str, list[tuple[datetime, float]]]

    @property
    def gpus(self) -> int:
        return sum(p.total_gpus for p in self.pools)

    @property
    def gpus_asked(self) -> float:
        return sum(j.spec.resources.gpu_equivalents for j in self.jobs)


def scenario(*, sites: int, jobs: int, seed: int, flat_carbon: bool) -> Scenario:
    rng = random.Random(seed)
    latency = load_latency()
    locations = sorted(latency.locations())
    zones = load_zones()
    fleet_sites, pools = build_fleet(rng, sites=sites, locations=locations, zones=sorted(zones))
    return Scenario(
        sites=fleet_sites,
        pools=pools,
        jobs=build_jobs(rng, n=jobs, locations=locations),
        latency=latency,
        series=carbon_series(rng, zones, flat=flat_carbon),
    )


def scheduler_settings(*, deferral: bool, batch_size: int) -> SchedulerSettings:
    return SchedulerSettings(deferral=deferral, batch_size=batch_size)


# ---- engine mode ---------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_values[int(rank) - 1]


@dataclass
class EnginePass:
    wall_s: float
    cpu_s: float  # process CPU time of the pass: what outside load on the machine moves least
    decided: int
    per_s: float
    p50_us: float
    p99_us: float
    max_us: float
    kinds: dict[str, int]


@dataclass
class EngineRun:
    deferral: bool
    jobs: int
    passes: list[EnginePass] = field(default_factory=list)
    median_per_s: float = 0.0
    median_wall_s: float = 0.0
    best_cpu_per_s: float = 0.0  # decisions per CPU-second of the fastest pass
    mean_us: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    note: str = ""


def kind_of(d: Decision) -> str:
    return {Place: "placed", Defer: "deferred", Wait: "waiting"}[type(d)]


def one_pass(engine: Engine, sc: Scenario, jobs: Sequence[Job]) -> EnginePass:
    """One `Engine.plan` over `jobs`, per-decision latency from the engine's `skip` hook.

    The engine calls `skip(job)` right before deciding each job and appends exactly one
    decision per job it does not skip, so the gaps between successive calls (and from the
    last call to the return) are the per-decision times, in decision order. Recording a
    timestamp costs well under a microsecond.
    """
    marks: list[float] = []
    mark = marks.append
    clock = time.perf_counter

    def skip(_job: Job) -> bool:
        mark(clock())
        return False

    carbon = HourlyTable(sc.series)
    cpu_started = time.process_time()
    started = clock()
    decisions = engine.plan(
        queue=jobs,
        pools=sc.pools,
        running=[],
        sites=sc.sites,
        latency=sc.latency,
        carbon=carbon,
        now=NOW,
        skip=skip,
    )
    ended = clock()
    cpu = time.process_time() - cpu_started
    marks.append(ended)
    lat = sorted(b - a for a, b in itertools.pairwise(marks))
    wall = ended - started
    return EnginePass(
        wall_s=wall,
        cpu_s=cpu,
        decided=len(decisions),
        per_s=len(decisions) / wall if wall else 0.0,
        p50_us=1e6 * percentile(lat, 50),
        p99_us=1e6 * percentile(lat, 99),
        max_us=1e6 * (lat[-1] if lat else 0.0),
        kinds=dict(Counter(kind_of(d) for d in decisions)),
    )


def run_engine(sc: Scenario, *, deferral: bool, reps: int, seconds: float) -> EngineRun:
    """Up to `reps` passes over the queue, stopping early once `seconds` are spent.

    A short probe on the first 100 jobs estimates a full pass first; when one pass would
    not fit in `seconds`, the measured queue is cut to what fits, and the run says so.
    """
    engine = Engine(engine_settings(scheduler_settings(deferral=deferral, batch_size=1)))
    jobs = sc.jobs
    run = EngineRun(deferral=deferral, jobs=len(jobs))
    probe = one_pass(engine, sc, jobs[:PROBE_JOBS])
    if probe.per_s and len(jobs) / probe.per_s > seconds:
        # The queue is in submission order, a seeded mix, so its head has the same mix.
        keep = max(PROBE_JOBS, int(probe.per_s * seconds * 0.8))
        run.note = (
            f"a full pass would take ~{len(jobs) / probe.per_s:.0f}s; measured the first "
            f"{keep} jobs of the queue"
        )
        jobs = jobs[:keep]
        run.jobs = keep
    spent = 0.0
    for _ in range(reps):
        p = one_pass(engine, sc, jobs)
        run.passes.append(p)
        spent += p.wall_s
        if spent + p.wall_s > seconds:
            break
    best = sorted(run.passes, key=lambda p: p.per_s)[len(run.passes) // 2]  # median pass
    run.median_per_s = statistics.median(p.per_s for p in run.passes)
    run.median_wall_s = statistics.median(p.wall_s for p in run.passes)
    fastest = min(p.cpu_s for p in run.passes)
    run.best_cpu_per_s = run.jobs / fastest if fastest else 0.0
    run.mean_us = 1e6 / run.median_per_s if run.median_per_s else 0.0
    run.p50_us, run.p99_us, run.kinds = best.p50_us, best.p99_us, best.kinds
    return run


def engine_table(runs: list[EngineRun]) -> str:
    header = (
        "deferral",
        "jobs",
        "reps",
        "wall_s",
        "decisions/s",
        "per_cpu_s",
        "mean_us",
        "p50_us",
        "p99_us",
        "placed",
        "deferred",
        "waiting",
    )
    rows: list[tuple[str, ...]] = [header]
    for r in runs:
        total = sum(r.kinds.values()) or 1
        rows.append(
            (
                "on" if r.deferral else "off",
                str(r.jobs),
                str(len(r.passes)),
                f"{r.median_wall_s:.2f}",
                f"{r.median_per_s:,.0f}",
                f"{r.best_cpu_per_s:,.0f}",
                f"{r.mean_us:.0f}",
                f"{r.p50_us:.0f}",
                f"{r.p99_us:.0f}",
                *(
                    f"{100 * r.kinds.get(k, 0) / total:.1f}%"
                    for k in ("placed", "deferred", "waiting")
                ),
            )
        )
    return render(rows)


def render(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def main_engine(args: argparse.Namespace) -> dict[str, Any]:
    sc = scenario(sites=args.sites, jobs=args.jobs, seed=args.seed, flat_carbon=args.flat_carbon)
    print(
        f"\n== engine: Engine.plan over {len(sc.jobs):,} pending jobs ({sc.gpus_asked:,.0f} GPUs "
        f"asked), {len(sc.sites)} sites x {len(MODELS)} models = {len(sc.pools):,} pools "
        f"({sc.gpus:,} GPUs); up to {args.reps} reps, ~{args.seconds:g}s each setting"
    )
    runs = []
    for deferral in (True, False):
        run = run_engine(sc, deferral=deferral, reps=args.reps, seconds=args.seconds)
        runs.append(run)
        if run.note:
            print(f"deferral {'on' if deferral else 'off'}: {run.note}")
    print(engine_table(runs))
    print(
        "decisions/s: jobs decided (placed + deferred + waiting) / wall time of one "
        "Engine.plan, median of the reps; per_cpu_s: decisions per CPU-second of the fastest "
        "pass; latencies are per decision, from the median pass"
    )
    return {"scenario": scenario_info(sc), "runs": [asdict(r) for r in runs]}


def scenario_info(sc: Scenario) -> dict[str, Any]:
    return {
        "sites": len(sc.sites),
        "pools": len(sc.pools),
        "gpus": sc.gpus,
        "jobs": len(sc.jobs),
        "gpus_asked": sc.gpus_asked,
        "tiers": dict(Counter(j.spec.tier.value for j in sc.jobs)),
        "with_deadline": sum(j.spec.deadline is not None for j in sc.jobs),
        "with_slo": sum(j.spec.latency_slo_ms is not None for j in sc.jobs),
    }


# ---- loop mode: fakes ----------------------------------------------------------------------


class InstantConnector(Connector):
    """A site that accepts every dispatch at once and never reports anything."""

    kind: ClassVar[SiteKind] = SiteKind.SIM

    def __init__(self, name: str) -> None:
        self._name = name

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> Self:
        return cls(site.name)

    @property
    def site_name(self) -> str:
        return self._name

    async def inventory(self) -> SiteInventory:
        raise NotImplementedError("the benchmark syncs the fleet itself")

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        return f"bench-{job.id}"

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        return None

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        return None

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        return
        yield  # an async generator that ends at once


class SeriesSource:
    """A `CarbonSource` over the scenario's precomputed hourly series."""

    name = "bench"

    def __init__(self, series: dict[str, list[tuple[datetime, float]]]) -> None:
        self._series = series

    def _reading(self, zone: str, at: datetime, value: float) -> IntensityReading:
        return IntensityReading(zone=zone, at=at, gco2_per_kwh=value, source=self.name)

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        hour = at.replace(minute=0, second=0, microsecond=0)
        for t, v in self._series.get(zone, ()):
            if t == hour:
                return self._reading(zone, t, v)
        return None

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        lo = start.replace(minute=0, second=0, microsecond=0)
        return [self._reading(zone, t, v) for t, v in self._series.get(zone, ()) if lo <= t < end]


# ---- loop mode -----------------------------------------------------------------------------


@dataclass
class LoopRun:
    backend: str
    jobs: int
    batch_size: int
    passes: int = 0
    decided: int = 0  # decisions the engine returned (placed + deferred + waiting)
    placed: int = 0  # committed placements
    deferred: int = 0  # decisions to defer (committed unless the job moved)
    waiting: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the same span (the driver included)
    engine_s: float = 0.0  # inside Engine.plan
    read_s: float = 0.0  # Store reads: queue, sites, pools, running work, deferred release
    commit_s: float = 0.0  # Store.place_many/defer_many (one transaction per batch), Store.place
    dispatch_s: float = 0.0  # Store.set_external_ids after the (instant) dispatches
    committed_per_s: float = 0.0
    decided_per_s: float = 0.0
    engine_per_s: float = 0.0
    pending_left: int = 0
    stopped: str = ""
    setup_s: dict[str, float] = field(default_factory=dict)


def timed_store(run: LoopRun, store: Any) -> None:
    """Wrap the store's methods the loop calls, adding their wall time to `run`."""
    buckets = {
        "release_deferred": "read_s",
        "queued_jobs": "read_s",
        "sites": "read_s",
        "pools": "read_s",
        "running_work": "read_s",
        "place": "commit_s",  # a placement that preempts, alone with its victims
        "place_many": "commit_s",
        "defer_many": "commit_s",
        "set_external_ids": "dispatch_s",
    }
    for name, bucket in buckets.items():
        setattr(store, name, _timed_async(getattr(store, name), run, bucket))


def _timed_async(fn: Callable[..., Any], run: LoopRun, bucket: str) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            setattr(run, bucket, getattr(run, bucket) + time.perf_counter() - t0)

    return wrapper


async def insert_jobs(sessions: Any, jobs: Sequence[Job]) -> None:
    """The pending jobs, 1,000 rows per transaction, as `Store.create_job` writes them."""
    from broker.db.models import JobEventRow, JobRow
    from broker.domain.serde import spec_to_dict

    for i in range(0, len(jobs), 1000):
        async with sessions.begin() as s:
            chunk = jobs[i : i + 1000]
            s.add_all(
                JobRow(
                    id=j.id,
                    tenant=j.tenant,
                    name=j.spec.name,
                    tier=j.spec.tier.value,
                    kind=j.spec.kind.value,
                    state=JobState.PENDING.value,
                    state_reason="submitted",
                    spec=spec_to_dict(j.spec),
                    gpu_milli=j.spec.resources.total_milli,
                    estimated_duration_s=j.spec.estimated_duration_s,
                    deadline=j.spec.deadline,
                    preemptible=j.spec.is_preemptible,
                    idempotency_key=None,
                    request_hash=None,
                    version=1,
                    created_at=j.created_at,
                    updated_at=j.created_at,
                )
                for j in chunk
            )
            await s.flush()
            s.add_all(
                JobEventRow(
                    job_id=j.id,
                    at=j.created_at,
                    from_state=None,
                    to_state=JobState.PENDING.value,
                    reason="submitted",
                    detail="",
                )
                for j in chunk
            )


async def measure_loop(
    backend: Backend, url: str, sc: Scenario, args: argparse.Namespace
) -> LoopRun:
    from broker.db.connection import create_engine, session_factory, upgrade
    from broker.db.repository import Store
    from broker.metrics import Metrics

    run = LoopRun(backend=backend, jobs=len(sc.jobs), batch_size=args.batch_size)
    engine = create_engine(url)
    try:
        t0 = time.perf_counter()
        await upgrade(engine)
        run.setup_s["migrate"] = time.perf_counter() - t0
        clock = ManualClock(NOW)
        store = Store(sessions=session_factory(engine), clock=clock)
        t0 = time.perf_counter()
        by_site: dict[str, list[GpuPool]] = {}
        for p in sc.pools:
            by_site.setdefault(p.site, []).append(p)
        for site in sc.sites:
            await store.sync_site(site, by_site[site.name])
        run.setup_s["sync_fleet"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await insert_jobs(session_factory(engine), sc.jobs)
        run.setup_s["insert_jobs"] = time.perf_counter() - t0

        loop = SchedulingLoop(
            store=store,
            connectors={s.name: InstantConnector(s.name) for s in sc.sites},
            carbon=SeriesSource(sc.series),
            latency=sc.latency,
            settings=scheduler_settings(deferral=not args.no_deferral, batch_size=args.batch_size),
            clock=clock,
            metrics=Metrics(),
        )
        timed_store(run, store)
        plan = loop.engine.plan
        planned: list[int] = []

        def timed_plan(**kwargs: Any) -> list[Decision]:
            t = time.perf_counter()
            decisions = plan(**kwargs)
            run.engine_s += time.perf_counter() - t
            planned.append(len(decisions))
            kinds = Counter(kind_of(d) for d in decisions)
            run.deferred += kinds["deferred"]
            run.waiting += kinds["waiting"]
            return decisions

        loop.engine.plan = timed_plan  # type: ignore[method-assign]  # instance-level spy
        started, cpu0 = time.perf_counter(), time.process_time()
        while True:
            before = len(planned)
            run.placed += await loop.run_once()
            run.passes += 1
            run.wall_s = time.perf_counter() - started
            run.cpu_s = time.process_time() - cpu0
            if len(planned) == before:
                run.stopped = "queue drained (or every pending job found unplaceable)"
                break
            if run.wall_s > args.seconds:
                run.stopped = f"time budget ({args.seconds:g}s) reached"
                break
        run.decided = sum(planned)
        counts = await Store(sessions=session_factory(engine), clock=clock).count_by_state()
        run.pending_left = counts[JobState.PENDING]
    finally:
        await engine.dispose()
    committed = run.placed + run.deferred
    run.committed_per_s = committed / run.wall_s if run.wall_s else 0.0
    run.decided_per_s = run.decided / run.wall_s if run.wall_s else 0.0
    run.engine_per_s = run.decided / run.engine_s if run.engine_s else 0.0
    return run


async def run_sqlite(sc: Scenario, args: argparse.Namespace) -> LoopRun:
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'broker.db'}"
        return await measure_loop("sqlite", url, sc, args)


async def run_postgresql(sc: Scenario, args: argparse.Namespace) -> LoopRun:
    async with pg_database("bench_placement") as (_, url):
        return await measure_loop("postgresql", url, sc, args)


def loop_table(runs: list[LoopRun]) -> str:
    header = (
        "backend",
        "passes",
        "decided",
        "placed",
        "deferred",
        "waiting",
        "wall_s",
        "cpu%",
        "committed/s",
        "decided/s",
        "engine_s",
        "read_s",
        "commit_s",
        "dispatch_s",
        "other_s",
    )
    rows: list[tuple[str, ...]] = [header]
    for r in runs:
        other = r.wall_s - r.engine_s - r.read_s - r.commit_s - r.dispatch_s
        rows.append(
            (
                r.backend,
                str(r.passes),
                str(r.decided),
                str(r.placed),
                str(r.deferred),
                str(r.waiting),
                f"{r.wall_s:.2f}",
                f"{100 * r.cpu_s / r.wall_s:.0f}" if r.wall_s else "?",
                f"{r.committed_per_s:,.0f}",
                f"{r.decided_per_s:,.0f}",
                f"{r.engine_s:.2f}",
                f"{r.read_s:.2f}",
                f"{r.commit_s:.2f}",
                f"{r.dispatch_s:.2f}",
                f"{other:.2f}",
            )
        )
    return render(rows)


async def main_loop_async(args: argparse.Namespace) -> dict[str, Any]:
    sc = scenario(sites=args.sites, jobs=args.jobs, seed=args.seed, flat_carbon=args.flat_carbon)
    backends: list[Backend] = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(
        f"\n== loop: SchedulingLoop.run_once until drained, {len(sc.jobs):,} pending jobs, "
        f"{len(sc.sites)} sites / {len(sc.pools):,} pools ({sc.gpus:,} GPUs), batch "
        f"{args.batch_size}, deferral {'off' if args.no_deferral else 'on'}, "
        f"budget ~{args.seconds:g}s per backend"
    )
    runs: list[LoopRun] = []
    results: dict[str, Any] = {}
    for backend in backends:
        if backend == "postgresql" and (why := await postgres_unreachable()):
            print(f"postgresql: SKIPPED, cannot reach {HOST}:5432 ({why})", file=sys.stderr)
            results[backend] = {"skipped": why}
            continue
        runner = run_sqlite if backend == "sqlite" else run_postgresql
        run = await runner(sc, args)
        runs.append(run)
        results[backend] = asdict(run)
        setup = ", ".join(f"{k} {v:.1f}s" for k, v in run.setup_s.items())
        print(f"{backend}: setup {setup}; stopped: {run.stopped}; {run.pending_left} left pending")
    if runs:
        print(loop_table(runs))
        print(
            "committed/s: (placed + deferred) / wall of all run_once calls; engine_s inside "
            "Engine.plan, read_s/commit_s/dispatch_s inside the Store's reads, "
            "place_many/defer_many/place, set_external_ids; other_s: the loop's own work "
            "(metrics, placements, dispatch); "
            "cpu%: this process's CPU over wall (100 = one core busy, the rest is waiting)"
        )
    return {"scenario": scenario_info(sc), "backends": results}


# ---- CLI -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpus": os.cpu_count(),
        "affinity": affinity,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sites", type=int, default=200, help="sites, 8 GPU pools each")
    common.add_argument("--jobs", type=int, default=10_000, help="pending jobs")
    common.add_argument("--seed", type=int, default=1, help="seed of the fleet and the queue")
    common.add_argument("--seconds", type=float, default=60.0, help="budget per measurement")
    common.add_argument(
        "--flat-carbon", action="store_true", help="constant intensity per zone: nothing defers"
    )
    common.add_argument("--json", type=Path, help="also write the results here")
    e = sub.add_parser("engine", parents=[common], help="Engine.plan in-process, one thread")
    e.add_argument("--reps", type=int, default=5, help="passes per setting (median reported)")
    lp = sub.add_parser("loop", parents=[common], help="SchedulingLoop.run_once on a database")
    lp.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    lp.add_argument("--batch-size", type=int, default=1000, help="scheduler.batch_size")
    lp.add_argument("--no-deferral", action="store_true", help="scheduler.deferral = false")
    args = p.parse_args(argv)
    if args.sites < 1 or args.jobs < 1 or args.seconds <= 0:
        p.error("--sites and --jobs must be >= 1, --seconds > 0")
    if args.mode == "engine" and args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    print(
        f"CPUs: {info['cpus']} (this process may run on {info['affinity']}); "
        f"Python {info['python']}; the engine is single-threaded, so it uses one of them"
    )
    run = main_engine if args.mode == "engine" else lambda a: asyncio.run(main_loop_async(a))
    results = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps({"settings": settings, "machine": info, **results}, indent=2, default=str)
            + "\n",
            encoding="utf-8",
        )
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
