"""The packing term: keep capacity usable for the work that is queued.

Cost, latency and carbon say where a job is best for itself; they say nothing of what its
placement leaves for the jobs behind it. The packing term, a fourth weighted term of the
ranking (`scheduler.packing_weight`, the same for every tier), adds that, in the spirit of
FGD ("Beware of Fragmentation", ATC'23: prefer the placement that least reduces what a node
can still take of the expected workload), from two parts in [0, 1]:

* **Scarcity** of the pool's GPU model: the queued GPU demand pinned to that model (a job
  that accepts k models counts 1/k toward each) over the model's free GPUs at the start of
  the pass, capped at 1. It keeps work that could run elsewhere off the models that pinned
  work waits for; a job pinned to one model sees the same scarcity on all its pools, so the
  term does not move it.
* **Fragmentation**: whether the job, in that pool, must open capacity nobody uses yet
  (`fragmentation`): 0 when a node where work already runs has the GPU room for it (a
  partly used GPU for a share, free whole GPUs for whole ones), 0.5 when a share must open
  an empty GPU of such a node, 1 when it must open an empty node. Weighted by the share
  of queued GPU demand in *large* jobs (two or more whole GPUs per node, or several
  nodes): the jobs that fragments keep waiting. With no large job queued, breaking a
  node costs nothing.

term = (scarcity + large share x fragmentation) / 2. The queue's figures are taken once per
pass (`Outlook.of`), the fragmentation of each pool as the pass goes, from its ledger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from broker.domain.fleet import GpuPool
from broker.domain.jobs import JobSpec, Resources
from broker.domain.nodes import Demand, NodeUse


@dataclass(frozen=True, slots=True)
class Outlook:
    """What the queue asks for, as the packing term sees it."""

    scarcity: Mapping[str, float] = field(default_factory=dict)  # per GPU model, in [0, 1]
    large_share: float = 0.0  # share of queued GPU demand in large jobs

    @classmethod
    def of(cls, queue: Iterable[JobSpec], pools: Sequence[GpuPool]) -> Outlook:
        return cls.of_counts(Counter(spec.resources for spec in queue), pools)

    @classmethod
    def of_counts(cls, counts: Mapping[Resources, int], pools: Sequence[GpuPool]) -> Outlook:
        """From how many queued jobs ask for each `Resources` (a caller that keeps the
        queue's counts up to date pays per distinct ask, not per job)."""
        models = {p.gpu_model for p in pools}
        free: dict[str, int] = {}
        for p in pools:
            free[p.gpu_model] = free.get(p.gpu_model, 0) + p.free_milli
        pinned: dict[str, float] = {}
        total = large = 0
        for res, n in counts.items():
            if n <= 0:
                continue
            milli = res.total_milli * n
            total += milli
            if res.nodes > 1 or (not res.shared_gpu and res.gpus >= 2):
                large += milli
            accepted = [m for m in res.gpu_models if m in models]
            if accepted and len(accepted) < len(models):
                for m in accepted:
                    pinned[m] = pinned.get(m, 0.0) + milli / len(accepted)
        scarcity = {m: min(1.0, pinned[m] / max(1, free.get(m, 0))) for m in pinned}
        return cls(scarcity=scarcity, large_share=large / total if total else 0.0)

    @property
    def empty(self) -> bool:
        """No scarcity and no large job queued: the term is 0 everywhere."""
        return not self.scarcity and self.large_share == 0

    def term(self, model: str, fragmentation: float) -> float:
        return (self.scarcity.get(model, 0.0) + self.large_share * fragmentation) / 2


NO_OUTLOOK = Outlook()


def fragmentation(uses: Iterable[NodeUse], demand: Demand) -> float:
    """How much placing `demand` on this pool breaks: 0 when a node where work already
    runs has the GPU room for it (a partly used GPU for a share, free whole GPUs for whole
    ones), 0.5 when a share must open an empty GPU of such a node, 1 when it must open an
    empty node. (GPU room only: CPU and memory decide where it fits, not what it breaks.)"""
    whole = share = 0  # on used nodes: most free whole GPUs, most room on a partly used GPU
    for u in uses:
        if u.in_use:
            whole = max(whole, u.free_whole)
            share = max(share, u.partial_room)
    return level(whole, share, demand)


def level(whole: int, share: int, demand: Demand) -> float:
    """`fragmentation` from a pool's two figures (also kept per pool by the fleet index)."""
    if demand.shared:
        if share >= demand.milli:
            return 0.0
        return 0.5 if whole >= 1 else 1.0
    return 0.0 if whole >= demand.whole_gpus else 1.0
