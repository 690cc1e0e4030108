"""Sites and the GPU pools they offer.

A pool is a homogeneous group of nodes on one site (same GPU model, same GPUs per node).
Capacity is counted in milli-GPUs so that fractional and MIG requests share one integer
ledger with whole-GPU requests: 1 GPU = 1000 units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from broker.domain.enums import Ability, Health, SiteKind

if TYPE_CHECKING:  # jobs imports this module
    pass

MILLI_PER_GPU = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    """One place work can run: a private cluster or a cloud region."""

    name: str
    kind: SiteKind
    region: str  # the provider's own name: "us-east-1", "europe-north1", "oslo-dc2"
    location: str  # key into the latency matrix, e.g. "aws:eu-north-1" (nearest metro)
    grid_zone: str  # Electricity Maps zone id, e.g. "NO", "US-CAL-CISO"
    private: bool  # private clusters are paid for already; clouds are burst capacity
    pue: float = 1.2
    health: Health = Health.HEALTHY
    health_reason: str = ""
    lacks: frozenset[Ability] = frozenset()  # what its connector cannot do

    def in_regions(self, allowed: tuple[str, ...]) -> bool:
        return self.region in allowed or self.location in allowed


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuPool:
    """A homogeneous set of GPU nodes on a site, with its price and current allocation."""

    id: str
    site: str
    gpu_model: str
    gpu_memory_gb: float
    gpus_per_node: int
    nodes: int
    price_on_demand: float  # USD per GPU-hour
    price_spot: float | None = None  # USD per GPU-hour, None when no spot market
    mig_profiles: tuple[str, ...] = ()
    cpu_per_node: float = 96.0
    memory_gb_per_node: float = 1024.0
    # milli-GPUs in use on each node (index 0 .. nodes-1); empty means nothing in use.
    node_allocated: tuple[int, ...] = ()
    updated_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def node_capacity_milli(self) -> int:
        return self.gpus_per_node * MILLI_PER_GPU

    def node_used(self) -> tuple[int, ...]:
        used = self.node_allocated[: self.nodes]
        return used + (0,) * (self.nodes - len(used))

    def fit(self, *, milli_per_node: int, count: int) -> tuple[int, ...] | None:
        """Best-fit: the `count` nodes with the least room that still hold `milli_per_node`.

        Filling the fullest nodes first keeps whole nodes free for whole-node and gang
        jobs; None when fewer than `count` nodes have the room (a gang needs all at once).
        """
        cap = self.node_capacity_milli
        room = sorted(
            (cap - used, i)
            for i, used in enumerate(self.node_used())
            if cap - used >= milli_per_node
        )
        if len(room) < count:
            return None
        return tuple(sorted(i for _, i in room[:count]))

    def leftover_after(self, nodes: tuple[int, ...], milli_per_node: int) -> int:
        """Free milli-GPUs left on the chosen nodes after a placement: lower is a tighter fit."""
        used = self.node_used()
        return sum(self.node_capacity_milli - used[i] - milli_per_node for i in nodes)

    def allocate(self, nodes: tuple[int, ...], milli_per_node: int) -> GpuPool:
        """This pool with `milli_per_node` more in use on each of `nodes` (negative releases)."""
        used = list(self.node_used())
        for i in nodes:
            used[i] += milli_per_node
            if not 0 <= used[i] <= self.node_capacity_milli:
                raise ValueError(f"node {i} of {self.id} would hold {used[i]} milli-GPUs")
        return replace(self, node_allocated=tuple(used))

    @property
    def allocated_milli(self) -> int:
        return sum(self.node_used())

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def total_milli(self) -> int:
        return self.total_gpus * MILLI_PER_GPU

    @property
    def free_milli(self) -> int:
        return max(0, self.total_milli - self.allocated_milli)

    @property
    def allocated_gpus(self) -> float:
        return self.allocated_milli / MILLI_PER_GPU

    @property
    def free_gpus(self) -> float:
        return self.free_milli / MILLI_PER_GPU


def mig_slices(profile: str) -> int:
    """Compute slices of a MIG profile name such as "3g.40gb" (NVIDIA's naming)."""
    head, sep, _ = profile.partition("g.")
    if not sep or not head.isdigit() or int(head) < 1 or int(head) > 7:
        raise ValueError(f"not a MIG profile name: {profile!r}")
    return int(head)


def mig_milli(profile: str) -> int:
    """GPU share of a MIG slice: an A100/H100 splits into 7 compute slices."""
    return -(-mig_slices(profile) * MILLI_PER_GPU // 7)
