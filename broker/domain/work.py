"""Work in progress as the engine sees it: a running job, where it holds GPUs, and since when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.domain.enums import Tier
from broker.domain.jobs import Job


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningWork:
    """A job holding GPUs on one pool (state scheduled or running)."""

    job_id: str
    tenant: str
    tier: Tier
    preemptible: bool
    pool_id: str
    node_indices: tuple[int, ...]
    milli_per_node: int
    gpu_model: str
    started_at: datetime | None  # None while scheduled but not yet running
    placed_at: datetime
    borrowed: bool = False  # runs on quota it borrowed from another tenant

    @property
    def gpu_milli(self) -> int:
        return self.milli_per_node * len(self.node_indices)

    def gpu_seconds_run(self, now: datetime) -> float:
        """Work that preempting it now would lose (GPU-seconds since it started)."""
        if self.started_at is None:
            return 0.0
        return max(0.0, (now - self.started_at).total_seconds()) * self.gpu_milli / 1000


def placed_work(
    job: Job,
    *,
    pool_id: str,
    gpu_model: str,
    nodes: tuple[int, ...],
    placed_at: datetime,
    started_at: datetime | None,
    borrowed: bool,
) -> RunningWork:
    """The hold a job takes when it is placed on `nodes` of a pool."""
    spec = job.spec
    return RunningWork(
        job_id=job.id,
        tenant=job.tenant,
        tier=spec.tier,
        preemptible=spec.is_preemptible,
        pool_id=pool_id,
        node_indices=nodes,
        milli_per_node=spec.resources.milli_per_node,
        gpu_model=gpu_model,
        started_at=started_at,
        placed_at=placed_at,
        borrowed=borrowed,
    )
