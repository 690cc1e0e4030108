"""Work in progress as the engine sees it: a running job, where it holds GPUs, and since when."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.jobs import Job
from broker.domain.nodes import Demand


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningWork:
    """A job holding GPUs on one pool (state scheduled or running)."""

    job_id: str
    tenant: str
    tier: Tier
    preemptible: bool
    pool_id: str
    node_indices: tuple[int, ...]  # positions in the pool (-1: a node it no longer offers)
    milli_per_node: int
    gpu_model: str
    started_at: datetime | None  # None while scheduled but not yet running
    placed_at: datetime
    borrowed: bool = False  # runs on quota it borrowed from another tenant
    node_gpus: tuple[tuple[int, ...], ...] = ()  # the GPUs it holds on each node
    cpu_milli: int = 0  # per node
    memory_mb: int = 0  # per node

    @property
    def demand(self) -> Demand:
        return Demand(self.milli_per_node, self.cpu_milli, self.memory_mb)

    def gpus(self) -> tuple[tuple[int, ...], ...]:
        """The GPUs it holds per node; when not recorded, laid out as `gpus_for` an empty
        node would (whole GPUs from 0, a share on GPU 0)."""
        if len(self.node_gpus) == len(self.node_indices):
            return self.node_gpus
        d = self.demand
        on = (0,) if d.shared else tuple(range(d.milli // 1000))
        return (on,) * len(self.node_indices)

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
    gpus: tuple[tuple[int, ...], ...],
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
        node_gpus=gpus,
        milli_per_node=spec.resources.milli_per_node,
        cpu_milli=spec.resources.demand.cpu_milli,
        memory_mb=spec.resources.demand.memory_mb,
        gpu_model=gpu_model,
        started_at=started_at,
        placed_at=placed_at,
        borrowed=borrowed,
    )


def lay_out(
    pools: Sequence[GpuPool], running: Sequence[RunningWork]
) -> tuple[list[GpuPool], list[RunningWork]]:
    """`pools` holding `running` on top of what they hold: each work in turn takes its
    GPUs the way a placement would (`GpuPool.gpus_on`) unless it names them already.

    For building a fleet from work known only by its nodes (tests, what-if views); work
    on a pool not in `pools`, or on a node the pool does not have, is returned as is."""
    by_id = {p.id: p for p in pools}
    out: list[RunningWork] = []
    for w in running:
        pool = by_id.get(w.pool_id)
        if pool is None or any(not 0 <= i < pool.nodes for i in w.node_indices):
            out.append(w)
            continue
        gpus = w.node_gpus
        if len(gpus) != len(w.node_indices):
            gpus = pool.gpus_on(w.node_indices, w.demand)
            w = replace(w, node_gpus=gpus)
        by_id[pool.id] = pool.allocate(w.node_indices, w.demand, gpus)
        out.append(w)
    return [by_id[p.id] for p in pools], out
