"""CPU-only trace rows: pods that take CPU and memory on GPU nodes but no GPU.

A production GPU cluster runs such pods too (data loaders, parameter servers, services
next to the trainers), placed by the cluster's own scheduler, not by the broker. The replay
gives them the same treatment under every policy, so they are load both policies share and
their comparison stays fair:

* each arrives at its submit time and is placed, in arrival order, on the node that fits
  its CPU and memory with the least GPU room left (over all pools, fleet order breaking
  ties): a GPU-aware "most allocated" score, which keeps wholly free GPU nodes' CPU for the
  GPU jobs that need it, the way clusters that run GPU work configure the default
  scheduler's `NodeResourcesFit` scoring;
* one that finds no room waits in arrival order and is tried again at every instant;
* it holds its node for its trace duration and is never preempted (the broker does not
  own it); it is not one of the policy's jobs in the summary, which reports how many ran
  and how long they waited (`summary`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.nodes import Demand, cpu_milli, memory_mb
from broker.domain.work import RunningWork
from broker.simulation.traces import TraceJob

TENANT = "cluster-cpu-only"  # the tenant their running work carries


@dataclass(slots=True)
class _Row:
    trace: TraceJob
    demand: Demand
    arrived: datetime | None = None
    started: datetime | None = None


class Background:
    """The CPU-only rows of one replay: waiting, running, and their figures."""

    def __init__(self, rows: Iterable[TraceJob], *, start: datetime) -> None:
        self.start = start
        self.rows = {
            t.job_id: _Row(
                trace=t,
                demand=Demand(0, cpu_milli(t.cpu or 1.0), memory_mb(t.memory_gb or 4.0)),
            )
            for t in rows
        }
        self.waiting: deque[str] = deque()
        self.running: dict[str, RunningWork] = {}
        self.waited_s = 0.0
        self.longest_wait_s = 0.0

    def arrivals(self) -> list[tuple[datetime, str]]:
        return [
            (self.start + timedelta(seconds=r.trace.submit_s), job_id)
            for job_id, r in self.rows.items()
        ]

    def arrive(self, job_id: str, now: datetime) -> None:
        self.rows[job_id].arrived = now
        self.waiting.append(job_id)

    def place(
        self, pools: MutableMapping[str, GpuPool], order: Sequence[str], now: datetime
    ) -> list[tuple[datetime, str]]:
        """Place what waits, in arrival order, while it fits; returns (end, job id) of
        each run started. A row that does not fit keeps its place in the line, and so
        does every row behind it of the same size or larger (nothing smaller is
        skipped past it: the cluster scheduler's queue is FIFO per size here)."""
        started: list[tuple[datetime, str]] = []
        blocked: list[Demand] = []
        kept: deque[str] = deque()
        while self.waiting:
            job_id = self.waiting.popleft()
            row = self.rows[job_id]
            d = row.demand
            if any(d.cpu_milli >= b.cpu_milli and d.memory_mb >= b.memory_mb for b in blocked):
                kept.append(job_id)
                continue
            where = _best_node(pools, order, d)
            if where is None:
                blocked.append(d)
                kept.append(job_id)
                continue
            pool_id, node = where
            pools[pool_id] = pools[pool_id].allocate((node,), d, ((),))
            assert row.arrived is not None
            wait = (now - row.arrived).total_seconds()
            self.waited_s += wait
            self.longest_wait_s = max(self.longest_wait_s, wait)
            row.started = now
            self.running[job_id] = RunningWork(
                job_id=job_id,
                tenant=TENANT,
                tier=Tier.P3,
                preemptible=False,
                pool_id=pool_id,
                node_indices=(node,),
                node_gpus=((),),
                milli_per_node=0,
                cpu_milli=d.cpu_milli,
                memory_mb=d.memory_mb,
                gpu_model=pools[pool_id].gpu_model,
                started_at=now,
                placed_at=now,
            )
            started.append((now + timedelta(seconds=row.trace.duration_s), job_id))
        self.waiting = kept
        return started

    def finish(self, job_id: str, pools: MutableMapping[str, GpuPool]) -> str:
        """The run ends and gives its node back; returns the pool it freed room on."""
        work = self.running.pop(job_id)
        pool = pools[work.pool_id]
        pools[pool.id] = pool.release(work.node_indices, work.node_gpus, work.demand)
        return pool.id

    def summary(self) -> dict[str, Any]:
        ran = sum(1 for r in self.rows.values() if r.started is not None)
        return {
            "rows": len(self.rows),
            "ran": ran,
            "never_placed": len(self.rows) - ran,
            "mean_wait_s": round(self.waited_s / ran, 1) if ran else None,
            "longest_wait_s": round(self.longest_wait_s, 1),
            "placement": "GPU-aware most-allocated: the node with the least GPU room left "
            "that fits the CPU and memory; FIFO; never preempted",
        }


def _best_node(
    pools: MutableMapping[str, GpuPool], order: Sequence[str], d: Demand
) -> tuple[str, int] | None:
    best: tuple[int, int, str, int] | None = None
    for rank, pool_id in enumerate(order):
        pool = pools[pool_id]
        if pool.nodes == 0 or pool.cpu_per_node * 1000 < d.cpu_milli:
            continue
        nodes = pool.fit(d, count=1)
        if nodes is None:
            continue
        key = (pool.leftover_after(nodes, d), rank, pool_id, nodes[0])
        if best is None or key < best:
            best = key
    return None if best is None else (best[2], best[3])
