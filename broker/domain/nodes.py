"""One node's ledger: each GPU's use, and the node's CPU and memory.

A node holds `gpus` GPUs of 1000 milli-GPUs each, `cpu_milli` milli-cores and `memory_mb`
MiB (its allocatable amounts). A job asks of each of its nodes a `Demand`:

* whole GPUs (`milli` a multiple of 1000): that many GPUs nobody uses;
* a share of one GPU (a fraction or a MIG slice: any other `milli` below 1000): `milli`
  free on one GPU, never split over two;
* `cpu_milli` and `memory_mb`, summed over the jobs on the node.

Which GPUs a job takes on a node is decided here, the same way for the engine, the store's
check and the simulator: whole GPUs are the lowest-numbered free ones; a share goes to the
GPU with the least room that holds it (best fit), so partly used GPUs fill up before a
whole one is broken into. GPU numbers are the ledger's slots on the node: interchangeable
for whole GPUs, and for shares the device plugin's own choice where it reports one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

MILLI_PER_GPU = 1000
_MIB_PER_GB = 1024


@functools.cache
def cpu_milli(cores: float) -> int:
    """Cores as milli-cores, rounded up (a request of 0.0001 cores still takes 1m)."""
    return math.ceil(round(cores * 1000, 6))


@functools.cache
def memory_mb(gb: float) -> int:
    """GiB as MiB, rounded up."""
    return math.ceil(round(gb * _MIB_PER_GB, 6))


class Demand(NamedTuple):
    """What a job takes on each of its nodes (a named tuple: it keys many caches)."""

    milli: int  # GPU share: whole GPUs x 1000, or a share of one GPU
    cpu_milli: int = 0
    memory_mb: int = 0

    @property
    def shared(self) -> bool:
        """A fraction or MIG slice (not a whole number of GPUs): it must fit on one GPU."""
        return self.milli % MILLI_PER_GPU != 0

    @property
    def whole_gpus(self) -> int:
        return 0 if self.shared else self.milli // MILLI_PER_GPU

    @property
    def per_gpu(self) -> int:
        """Milli-GPUs it takes on each GPU it uses."""
        return self.milli if self.shared else MILLI_PER_GPU


@dataclass(frozen=True, slots=True)
class NodeUse:
    """What is in use on one node: milli-GPUs per GPU, milli-cores and MiB."""

    gpus: tuple[int, ...]
    cpu_milli: int = 0
    memory_mb: int = 0
    # derived, for quick fit checks
    free_whole: int = field(init=False, compare=False)
    best_room: int = field(init=False, compare=False)  # the most room on one GPU
    used_milli: int = field(init=False, compare=False)
    partial_room: int = field(init=False, compare=False)  # the most room on a partly used GPU

    def __post_init__(self) -> None:
        gpus = self.gpus
        object.__setattr__(self, "free_whole", gpus.count(0))
        object.__setattr__(self, "best_room", MILLI_PER_GPU - min(gpus) if gpus else 0)
        object.__setattr__(self, "used_milli", sum(gpus))
        partly = [g for g in gpus if 0 < g < MILLI_PER_GPU]
        object.__setattr__(self, "partial_room", MILLI_PER_GPU - min(partly) if partly else 0)

    @property
    def in_use(self) -> bool:
        """Some GPU share, or some CPU, is taken on it."""
        return bool(self.used_milli or self.cpu_milli)

    @classmethod
    def empty(cls, gpus: int) -> NodeUse:
        return _EMPTY.get(gpus) or cls((0,) * gpus)

    @classmethod
    def of_total(cls, gpus: int, milli: int, *, cpu_milli: int = 0, memory_mb: int = 0) -> NodeUse:
        """A node whose `milli` in use fill its GPUs in order (whole GPUs, then a share):
        how usage known only as a total per node (a pod's GPU count) is laid out."""
        left = max(0, min(milli, gpus * MILLI_PER_GPU))
        per = []
        for _ in range(gpus):
            take = min(MILLI_PER_GPU, left)
            per.append(take)
            left -= take
        return cls(tuple(per), cpu_milli, memory_mb)


_EMPTY = {n: NodeUse((0,) * n) for n in range(0, 17)}


@dataclass(frozen=True, slots=True)
class NodeSize:
    """A node's allocatable amounts."""

    gpus: int
    cpu_milli: int
    memory_mb: int


def fits(use: NodeUse, demand: Demand, size: NodeSize) -> bool:
    """Whether `demand` fits on the node now."""
    if use.cpu_milli + demand.cpu_milli > size.cpu_milli:
        return False
    if use.memory_mb + demand.memory_mb > size.memory_mb:
        return False
    if demand.shared:
        return use.best_room >= demand.milli
    return use.free_whole >= demand.milli // MILLI_PER_GPU


def gpus_for(use: NodeUse, demand: Demand) -> tuple[int, ...]:
    """The GPUs `demand` takes on this node (it must fit; see the module's rule)."""
    if demand.shared:
        best = -1
        for g, used in enumerate(use.gpus):
            room = MILLI_PER_GPU - used
            if room >= demand.milli and (best < 0 or room < MILLI_PER_GPU - use.gpus[best]):
                best = g
        if best < 0:
            raise ValueError(f"no GPU has {demand.milli} milli-GPUs free")
        return (best,)
    want = demand.milli // MILLI_PER_GPU
    free = tuple(g for g, used in enumerate(use.gpus) if used == 0)[:want]
    if len(free) < want:
        raise ValueError(f"{want} whole GPUs wanted, {len(free)} free")
    return free


def add(use: NodeUse, gpus: Sequence[int], demand: Demand, *, sign: int = 1) -> NodeUse:
    """The node with `demand` taken on `gpus` (sign=-1 gives it back, never below zero)."""
    per = list(use.gpus)
    share = demand.per_gpu * sign
    for g in gpus:
        if 0 <= g < len(per):
            per[g] = max(0, per[g] + share)
    return NodeUse(
        tuple(per),
        max(0, use.cpu_milli + demand.cpu_milli * sign),
        max(0, use.memory_mb + demand.memory_mb * sign),
    )


def over(use: NodeUse, size: NodeSize) -> list[str]:
    """What the node holds beyond its size (empty when it is consistent)."""
    out = [f"GPU {g} holds {u} milli-GPUs" for g, u in enumerate(use.gpus) if u > MILLI_PER_GPU]
    if len(use.gpus) != size.gpus:
        out.append(f"{len(use.gpus)} GPUs in use records, {size.gpus} on the node")
    if use.cpu_milli > size.cpu_milli:
        out.append(f"CPU {use.cpu_milli}m of {size.cpu_milli}m")
    if use.memory_mb > size.memory_mb:
        out.append(f"memory {use.memory_mb} MiB of {size.memory_mb} MiB")
    return out


def leftover(use: NodeUse, demand: Demand) -> int:
    """Free milli-GPUs on the node after the demand: lower is a tighter fit."""
    return len(use.gpus) * MILLI_PER_GPU - use.used_milli - demand.milli


@functools.cache
def demand_of(milli: int, cpu: float, memory_gb: float) -> Demand:
    """The `Demand` of a per-node ask in the API's units (cores, GB); one object per ask."""
    return Demand(milli, cpu_milli(cpu), memory_mb(memory_gb))


@functools.cache
def node_size(gpus: int, cpu: float, memory_gb: float) -> NodeSize:
    return NodeSize(gpus, cpu_milli(cpu), memory_mb(memory_gb))
