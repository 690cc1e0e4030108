"""Small builders for policy tests: a pool whose ledger matches the running work on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.work import RunningWork, lay_out

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


def placed(
    running: Sequence[RunningWork] = (),
    *,
    pool_id: str = "p",
    nodes: int = 1,
    per_node: int = 8,
    model: str = "H100",
) -> tuple[GpuPool, list[RunningWork]]:
    """A pool whose ledger holds exactly `running` (the work on this pool), and the work
    with the GPUs it holds there (`lay_out`)."""
    empty = GpuPool(
        id=pool_id,
        site="s",
        gpu_model=model,
        gpu_memory_gb=80,
        gpus_per_node=per_node,
        nodes=nodes,
        price_on_demand=2.0,
    )
    pools, works = lay_out([empty], running)
    return pools[0], works


def pool(
    running: Sequence[RunningWork] = (),
    *,
    pool_id: str = "p",
    nodes: int = 1,
    per_node: int = 8,
    model: str = "H100",
) -> GpuPool:
    """`placed`'s pool alone (for work that holds whole GPUs only, whose GPUs need no names)."""
    return placed(running, pool_id=pool_id, nodes=nodes, per_node=per_node, model=model)[0]
