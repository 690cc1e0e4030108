"""What a replay records and the figures of one run.

A `SimJob` is a trace job as the replay follows it, with one `Run` per stretch on a pool (a
preempted job has several); an `Outcome` is one policy's replay. Energy, emissions and cost
are computed per run here, for the report and the charts alike: energy is board power (the
engine's table, with the fleet's `gpu_models` overrides) x GPUs x hours x utilisation x PUE,
and emissions integrate it against the zone's hourly intensity over the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from broker.domain.deferral import run_window_gco2
from broker.domain.engine import CarbonOracle
from broker.domain.enums import JobState
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from broker.domain.placement import power_kw as kw_by_model
from broker.simulation.allocation import Sample, StateCheck
from broker.simulation.traces import TraceJob
from carbon.power import GPU_MODELS


@dataclass(slots=True)
class Run:
    """One stretch of a job on a pool; a preempted job has several."""

    site: str
    pool_id: str
    gpu_model: str
    gpus: float
    price_per_gpu_hour: float
    pue: float
    zone: str
    start: datetime
    end: datetime | None = None
    preempted: bool = False


@dataclass(slots=True)
class SimJob:
    trace: TraceJob
    job: Job
    runs: list[Run] = field(default_factory=list)
    first_start: datetime | None = None
    finish: datetime | None = None
    preemptions: int = 0
    deferred: bool = False
    token: int = 0  # invalidates the completion event of an earlier, preempted run


@dataclass(frozen=True, slots=True)
class Outcome:
    policy: str
    jobs: list[SimJob]
    allocation: list[tuple[datetime, float]]  # (time, allocated GPUs) at every change
    total_gpus: float
    start: datetime
    end: datetime
    samples: list[Sample] = field(default_factory=list)  # one per instant, after its pass
    capacity_by_model: dict[str, float] = field(default_factory=dict)  # burst at its limit
    checks: list[StateCheck] = field(default_factory=list)  # the ledger at the peak, the end
    background: dict[str, Any] = field(default_factory=dict)  # the CPU-only rows' figures


_DEFAULT_RESOURCES = Resources()


def to_job(t: TraceJob, *, start: datetime) -> Job:
    """The broker's job for a trace row; CPU and memory the trace leaves unstated (0) take
    `Resources`' defaults."""
    submitted = start + timedelta(seconds=t.submit_s)
    spec = JobSpec(
        name=t.job_id[:128],
        tier=t.tier,
        kind=t.kind,
        resources=Resources(
            gpus=t.gpus,
            gpu_models=t.gpu_models,
            gpu_fraction=t.gpu_fraction,
            nodes=t.nodes,
            cpu=t.cpu or _DEFAULT_RESOURCES.cpu,
            memory_gb=t.memory_gb or _DEFAULT_RESOURCES.memory_gb,
        ),
        workload=Workload(image="trace"),
        estimated_duration_s=t.duration_s,
        deadline=None if t.deadline_s is None else start + timedelta(seconds=t.deadline_s),
        origin=t.origin,
        preemptible=t.preemptible,
    )
    return Job(
        id=t.job_id,
        tenant=t.tenant,
        spec=spec,
        state=JobState.PENDING,
        created_at=submitted,
        updated_at=submitted,
    )


_SHIPPED_KW = kw_by_model(GPU_MODELS)  # the engine's default table, by the same conversion


def run_energy_kwh(
    run: Run, *, utilisation: float, power_kw: Mapping[str, float] | None = None
) -> float:
    """kWh of one run: board power (`power_kw`, the engine's table with the fleet's
    `gpu_models` overrides; default the shipped datasheet table) x GPUs x hours x utilisation
    x PUE. A model without a power figure is an error, never a silent zero: the engine
    never places work on one."""
    if run.end is None:
        return 0.0
    table = _SHIPPED_KW if power_kw is None else power_kw
    if run.gpu_model not in table:
        raise ValueError(f"no board power for GPU model {run.gpu_model!r} (run on {run.pool_id})")
    hours = (run.end - run.start).total_seconds() / 3600
    return table[run.gpu_model] * run.gpus * hours * utilisation * run.pue


def run_gco2(
    run: Run,
    *,
    utilisation: float,
    carbon: CarbonOracle,
    power_kw: Mapping[str, float] | None = None,
) -> float:
    """Grams CO2e of one run; an intensity gap is an error, never a silent zero."""
    if run.end is None or run.end <= run.start:
        return 0.0
    energy = run_energy_kwh(run, utilisation=utilisation, power_kw=power_kw)
    gco2 = run_window_gco2(
        energy_kwh=energy,
        start=run.start,
        duration_s=(run.end - run.start).total_seconds(),
        hourly=carbon.hourly(run.zone, start=run.start, end=run.end),
    )
    if gco2 is None:
        raise ValueError(
            f"no carbon intensity for zone {run.zone} over {run.start.isoformat()} .. "
            f"{run.end.isoformat()}"
        )
    return gco2


def run_cost(run: Run) -> float:
    if run.end is None:
        return 0.0
    return run.price_per_gpu_hour * run.gpus * (run.end - run.start).total_seconds() / 3600
