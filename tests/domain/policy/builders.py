"""Small builders for policy tests: a pool whose ledger matches the running work on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.work import RunningWork

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def work(
    job_id: str,
    *,
    nodes: tuple[int, ...] = (0,),
    gpus: float = 1,
    tier: Tier = Tier.P3,
    preemptible: bool = True,
    hours_ago: float | None = 1.0,
    tenant: str = "t",
    borrowed: bool = False,
    pool_id: str = "p",
    model: str = "H100",
) -> RunningWork:
    """Running work holding `gpus` GPUs on each of `nodes`, started `hours_ago` (None: not yet)."""
    started = None if hours_ago is None else NOW - timedelta(hours=hours_ago)
    return RunningWork(
        job_id=job_id,
        tenant=tenant,
        tier=tier,
        preemptible=preemptible,
        pool_id=pool_id,
        node_indices=nodes,
        milli_per_node=round(gpus * 1000),
        gpu_model=model,
        started_at=started,
        placed_at=started or NOW,
        borrowed=borrowed,
    )


def pool(
    running: Sequence[RunningWork] = (),
    *,
    pool_id: str = "p",
    nodes: int = 1,
    per_node: int = 8,
    model: str = "H100",
) -> GpuPool:
    """A pool whose per-node ledger holds exactly `running` (the work on this pool)."""
    used = [0] * nodes
    for w in running:
        if w.pool_id == pool_id:
            for i in w.node_indices:
                used[i] += w.milli_per_node
    return GpuPool(
        id=pool_id,
        site="s",
        gpu_model=model,
        gpu_memory_gb=80,
        gpus_per_node=per_node,
        nodes=nodes,
        price_on_demand=2.0,
        node_allocated=tuple(used),
    )
