"""Allocation while work waits, and the replay's check of its own ledger.

A fleet can be 60 % allocated on average and still keep work waiting: fragments too small
for the queued gang, GPU models the waiting jobs do not accept. The mean alone cannot tell
that apart from a fleet that is simply not busy, so the simulator also samples, once per
instant (after that instant's scheduling pass), how many jobs wait and how many GPUs of
each model are allocated; the figures below are time-weighted over the stretches in which
at least one job waits. Sampling once per instant, not at every start and end, is enough:
the states inside an instant last no time.

The state check compares the pool ledger with the work the simulator believes is running.
It runs twice per replay, at the peak of allocation and at the end, because running it at
every change would cost a pass over all running work each time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.fleet import MILLI_PER_GPU, GpuPool
from broker.domain.nodes import Demand, NodeUse, over
from broker.domain.work import RunningWork

MAX_VIOLATIONS = 10  # listed in summary.json; the count is always complete


@dataclass(frozen=True, slots=True)
class Sample:
    """The state from `at` until the next sample."""

    at: datetime
    waiting: int  # jobs queued: arrived, released or preempted, not running, not deferred
    allocated: Mapping[str, float]  # GPUs allocated, by GPU model


def sample(*, at: datetime, waiting: int, pools: Iterable[GpuPool]) -> Sample:
    allocated: dict[str, float] = {}
    for pool in pools:
        allocated[pool.gpu_model] = allocated.get(pool.gpu_model, 0.0) + pool.allocated_gpus
    return Sample(at=at, waiting=waiting, allocated=allocated)


def capacity_by_model(pools: Iterable[GpuPool]) -> dict[str, float]:
    """GPUs per model; pass burst pools at their limit, as the simulator's capacity does."""
    capacity: dict[str, float] = {}
    for pool in pools:
        capacity[pool.gpu_model] = capacity.get(pool.gpu_model, 0.0) + pool.total_gpus
    return capacity


def allocation_while_waiting(
    samples: Sequence[Sample], *, capacity: Mapping[str, float]
) -> dict[str, Any] | None:
    """Time-weighted share of GPUs allocated over the time some job waits; None if none did.

    `overall` divides by all GPUs, `by_model` by each model's own; a model without capacity
    is left out.
    """
    waited = 0.0
    area: dict[str, float] = {}
    for s, following in itertools.pairwise(samples):
        if not s.waiting:
            continue
        dt = (following.at - s.at).total_seconds()
        waited += dt
        for model, gpus in s.allocated.items():
            area[model] = area.get(model, 0.0) + gpus * dt
    total = sum(capacity.values())
    if waited <= 0 or total <= 0:
        return None
    return {
        "overall": round(sum(area.values()) / waited / total, 4),
        "by_model": {
            model: round(area.get(model, 0.0) / waited / gpus, 4)
            for model, gpus in sorted(capacity.items())
            if gpus > 0
        },
        "waiting_hours": round(waited / 3600, 2),
    }


def first_wait(
    samples: Sequence[Sample], *, start: datetime, total_gpus: float
) -> dict[str, Any] | None:
    """When a job first waited (seconds from the replay's start) and the share then
    allocated; None if no job ever waited."""
    for s in samples:
        if s.waiting:
            share = sum(s.allocated.values()) / total_gpus if total_gpus > 0 else 0.0
            return {"at_s": (s.at - start).total_seconds(), "allocated_share": round(share, 4)}
    return None


@dataclass(frozen=True, slots=True)
class StateCheck:
    """One check of the ledger; `violations` are human-readable, at most `MAX_VIOLATIONS`."""

    at: datetime
    label: str  # "peak" or "end"
    violations: tuple[str, ...]
    count: int


def check_state(
    *,
    at: datetime,
    label: str,
    pools: Mapping[str, GpuPool],
    running: Iterable[RunningWork],
) -> StateCheck:
    """No node over its GPUs, CPU or memory, every fraction on one GPU, and each node's
    ledger equal to the work placed on it.

    The work is laid out again from what each run holds (its nodes, the GPUs on each, its
    CPU and memory), independently of the ledger: a share split over two GPUs, two shares
    over one GPU's 1000, or CPU summed past the node's size shows as a violation, and so
    does a ledger that disagrees with the work.
    """
    found: list[str] = []
    held: dict[tuple[str, int], NodeUse] = {}
    for work in running:
        pool = pools.get(work.pool_id)
        if pool is None:
            found.append(f"{label}: job {work.job_id} runs on unknown pool {work.pool_id}")
            continue
        demand = work.demand
        gpus = work.gpus()
        for i, on in zip(work.node_indices, gpus, strict=True):
            if not 0 <= i < pool.nodes:
                found.append(
                    f"{label}: job {work.job_id} on node {i} of {pool.id}, which has "
                    f"{pool.nodes} node(s)"
                )
                continue
            wanted = 1 if demand.shared else demand.whole_gpus
            if len(set(on)) != len(on) or len(on) != wanted:
                found.append(
                    f"{label}: job {work.job_id} holds GPUs {list(on)} on node {i} of "
                    f"{pool.id} for {demand.milli / MILLI_PER_GPU:g} GPUs"
                )
            if any(not 0 <= g < pool.gpus_per_node for g in on):
                found.append(f"{label}: job {work.job_id} on a GPU node {i} of {pool.id} lacks")
                continue
            use = held.get((pool.id, i)) or NodeUse.empty(pool.gpus_per_node)
            held[pool.id, i] = _add_unchecked(use, on, demand)
    for pool in pools.values():
        size = pool.size
        for i, use in enumerate(pool.uses()):
            where = f"{label}: node {i} of {pool.id}"
            for v in over(use, size):
                found.append(f"{where}: ledger {v}")
            on_node = held.pop((pool.id, i), None) or NodeUse.empty(pool.gpus_per_node)
            for v in over(on_node, size):
                found.append(f"{where}: running work {v}")
            if on_node != use:
                found.append(f"{where}: ledger {_show(use)}, running work {_show(on_node)}")
    return StateCheck(
        at=at, label=label, violations=tuple(found[:MAX_VIOLATIONS]), count=len(found)
    )


def _add_unchecked(use: NodeUse, gpus: Sequence[int], demand: Demand) -> NodeUse:
    """`use` plus the demand on `gpus`, without capping anything (to see overdrafts)."""
    per = list(use.gpus)
    for g in gpus:
        per[g] += demand.per_gpu
    return NodeUse(tuple(per), use.cpu_milli + demand.cpu_milli, use.memory_mb + demand.memory_mb)


def _show(use: NodeUse) -> str:
    return f"GPUs {list(use.gpus)} (milli), CPU {use.cpu_milli}m, memory {use.memory_mb} MiB"


def check_summary(checks: Sequence[StateCheck]) -> dict[str, Any]:
    """`final_state_check` of summary.json: the checks at the peak and the end together."""
    violations = [v for c in checks for v in c.violations][:MAX_VIOLATIONS]
    count = sum(c.count for c in checks)
    return {
        "ok": count == 0,
        "checked": [{"label": c.label, "at": c.at.isoformat()} for c in checks],
        "violation_count": count,
        "violations": violations,
    }
