"""Who goes next within a tier: dominant-resource fair share, softened by aging.

Rules:

* Resources are named: one per GPU model (`"gpu:H100"`, `"gpu:L4"`, see `gpu_resource`)
  and optionally `"cpu"` and `"memory_gb"`. GPU models are separate resources because an
  H100 and an L4 are not interchangeable: a tenant holding half the H100s has share 0.5
  even if it holds no L4 at all.
* A tenant's dominant share (DRF, Ghodsi et al., NSDI 2011) is the largest fraction of
  any one resource it holds: `max_r usage[t][r] / capacity[r]`. Resources with no (or
  zero) capacity are ignored; a tenant using nothing has share 0.
* The queue is ordered by tier first, always: every P1 before any P2, every P2 before
  any P3. Fair share never lets a light tenant's P3 overtake a heavy tenant's P1.
* Within a tier, by effective priority, lower first:

      effective = dominant_share(tenant) − aging_per_hour × hours_waited

  where `hours_waited = max(0, now − created_at) / 3600` (from creation, so a preempted
  and requeued job keeps its age). A share lies in [0, 1], so with `aging_per_hour = 0.1`
  a job of a tenant at share 1.0 that has waited 10 hours ties with a fresh job of an
  idle tenant (share 0) and goes first after that: waiting ages a job until even the
  heaviest tenant's work reaches the front, so nothing starves forever. A tenant missing
  from `shares` counts as share 0.
* Deadlines come before fairness when they are close: within a tier, a job whose slack
  (`deadline − now − estimated duration`) is below `urgent_slack_s` goes ahead of every
  job that is not urgent, the least slack first (earliest-deadline-first among the
  urgent). Fair share decides only among jobs that can afford to wait.
* Ties: the oldest `created_at`, then the job id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.domain.fleet import MILLI_PER_GPU, GpuPool
from broker.domain.jobs import Job
from broker.domain.work import RunningWork

CPU = "cpu"
MEMORY_GB = "memory_gb"


def gpu_resource(gpu_model: str) -> str:
    """The resource name of one GPU model, e.g. "gpu:H100"."""
    return f"gpu:{gpu_model}"


def dominant_shares(
    *, usage: Mapping[str, Mapping[str, float]], capacity: Mapping[str, float]
) -> dict[str, float]:
    """Each tenant's dominant share: its largest usage/capacity over the named resources."""
    shares: dict[str, float] = {}
    for tenant, used in usage.items():
        fractions = [
            amount / capacity[name] for name, amount in used.items() if capacity.get(name, 0.0) > 0
        ]
        shares[tenant] = max(fractions, default=0.0)
    return shares


def effective_priority(
    job: Job, *, shares: Mapping[str, float], now: datetime, aging_per_hour: float
) -> float:
    """Dominant share minus aging: lower goes first within a tier."""
    hours = max(0.0, (now - job.created_at).total_seconds()) / 3600
    return shares.get(job.tenant, 0.0) - aging_per_hour * hours


def order_queue(
    *,
    jobs: Sequence[Job],
    shares: Mapping[str, float],
    now: datetime,
    aging_per_hour: float,
    urgent_slack_s: float = 0.0,
) -> list[Job]:
    """The queue in scheduling order: tier, urgency, effective priority, age, id."""

    def key(job: Job) -> tuple[int, int, float, datetime, str]:
        slack = slack_s(job, now=now)
        if slack is not None and slack < urgent_slack_s:
            return (job.spec.tier.rank, 0, slack, job.created_at, job.id)
        priority = effective_priority(job, shares=shares, now=now, aging_per_hour=aging_per_hour)
        return (job.spec.tier.rank, 1, priority, job.created_at, job.id)

    return sorted(jobs, key=key)


def slack_s(job: Job, *, now: datetime) -> float | None:
    """Seconds a job can still wait and meet its deadline; None without a deadline."""
    deadline = job.spec.deadline
    if deadline is None:
        return None
    return (deadline - now).total_seconds() - job.spec.estimated_duration_s


def usage_from_running(
    running: Sequence[RunningWork],
    *,
    cpu_by_job: Mapping[str, float] | None = None,
    memory_gb_by_job: Mapping[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Usage by tenant and resource: GPUs per model, plus CPU and memory when given per job.

    `cpu_by_job` and `memory_gb_by_job` are totals per job id (all its nodes); work that
    RunningWork does not describe, so the engine passes it when it wants those resources
    in the share.
    """
    usage: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}  # resource name by model, not one f-string per work item
    extra = cpu_by_job is not None or memory_gb_by_job is not None
    for w in running:  # the hot loop of a pass over thousands of running jobs
        mine = usage.get(w.tenant)
        if mine is None:
            mine = usage[w.tenant] = {}
        name = names.get(w.gpu_model)
        if name is None:
            name = names[w.gpu_model] = gpu_resource(w.gpu_model)
        milli = w.milli_per_node * len(w.node_indices)  # `gpu_milli`, inlined
        mine[name] = mine.get(name, 0.0) + milli / MILLI_PER_GPU
        if not extra:
            continue
        if cpu_by_job is not None and w.job_id in cpu_by_job:
            mine[CPU] = mine.get(CPU, 0.0) + cpu_by_job[w.job_id]
        if memory_gb_by_job is not None and w.job_id in memory_gb_by_job:
            mine[MEMORY_GB] = mine.get(MEMORY_GB, 0.0) + memory_gb_by_job[w.job_id]
    return usage


def capacity_from_pools(pools: Sequence[GpuPool]) -> dict[str, float]:
    """Total capacity by resource name: GPUs per model, CPUs and memory over all nodes."""
    capacity: dict[str, float] = {}
    for pool in pools:
        name = gpu_resource(pool.gpu_model)
        capacity[name] = capacity.get(name, 0.0) + pool.total_gpus
        capacity[CPU] = capacity.get(CPU, 0.0) + pool.cpu_per_node * pool.nodes
        capacity[MEMORY_GB] = capacity.get(MEMORY_GB, 0.0) + pool.memory_gb_per_node * pool.nodes
    return capacity
