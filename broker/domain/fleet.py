"""Sites and the GPU pools they offer.

A pool is a homogeneous group of nodes on one site (same GPU model, same GPUs per node).
Capacity is counted in milli-GPUs so that fractional and MIG requests share one integer
ledger with whole-GPU requests: 1 GPU = 1000 units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from broker.domain.enums import Ability, Health, JobKind, SiteKind, Tier
from broker.domain.nodes import (
    MILLI_PER_GPU,
    Demand,
    NodeSize,
    NodeUse,
    add,
    fits,
    gpus_for,
    leftover,
    node_size,
)

__all__ = ["MILLI_PER_GPU", "Demand", "GpuPool", "NodePoolScope", "NodeUse", "Site"]


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
class NodePoolScope:
    """The site-declared node pool a `GpuPool`'s nodes belong to, and which jobs it takes
    (empty: any tier, any kind); like a Kueue ResourceFlavor, see
    `connectors.kubernetes.settings.NodePoolSettings`."""

    name: str
    tiers: frozenset[Tier] = frozenset()
    kinds: frozenset[JobKind] = frozenset()

    def takes(self, tier: Tier, kind: JobKind) -> bool:
        return (not self.tiers or tier in self.tiers) and (not self.kinds or kind in self.kinds)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuPool:
    """A homogeneous set of GPU nodes on a site, with its price and current allocation.

    Each node is known by name (`node_names`; a Kubernetes node name, or the position for
    configured pools) and keeps its own ledger (`node_use`: each GPU's use, CPU, memory;
    see `broker.domain.nodes` for the packing rules)."""

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
    # what is in use on each node (position 0 .. nodes-1); empty means nothing in use
    node_use: tuple[NodeUse, ...] = ()
    # each node's name, aligned with positions; empty means "0", "1", ...
    node_names: tuple[str, ...] = ()
    updated_at: datetime | None = None
    # the declared node pool its nodes are in; None: nodes no declared node pool selects
    node_pool: NodePoolScope | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # milli-GPUs in use over all nodes (derived from `node_use`, once per pool version)
    allocated_milli: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocated_milli", sum(u.used_milli for u in self.uses()))

    @property
    def node_capacity_milli(self) -> int:
        return self.gpus_per_node * MILLI_PER_GPU

    @property
    def size(self) -> NodeSize:
        return node_size(self.gpus_per_node, self.cpu_per_node, self.memory_gb_per_node)

    def uses(self) -> tuple[NodeUse, ...]:
        use = self.node_use[: self.nodes]
        if len(use) == self.nodes:
            return use
        return use + (NodeUse.empty(self.gpus_per_node),) * (self.nodes - len(use))

    def names(self) -> tuple[str, ...]:
        if len(self.node_names) == self.nodes:
            return self.node_names
        return default_node_names(self.nodes)

    def node_name(self, i: int) -> str:
        return self.node_names[i] if len(self.node_names) == self.nodes else str(i)

    def node_used(self) -> tuple[int, ...]:
        """Milli-GPUs in use on each node."""
        return tuple(u.used_milli for u in self.uses())

    def fit(self, demand: Demand, *, count: int) -> tuple[int, ...] | None:
        """Best-fit: the `count` nodes with the least GPU room left that still hold `demand`.

        Filling the fullest nodes first keeps whole nodes free for whole-node and gang
        jobs; None when fewer than `count` nodes have the room (a gang needs all at once).
        """
        # `nodes.fits`, unrolled per kind of ask: this runs for every node of every fit
        cap = self.node_capacity_milli
        size = self.size
        cpu_left = size.cpu_milli - demand.cpu_milli
        mem_left = size.memory_mb - demand.memory_mb
        milli = demand.milli
        if milli % MILLI_PER_GPU:  # a share: room on one GPU
            room = [
                (cap - u.used_milli, i)
                for i, u in enumerate(self.uses())
                if u.best_room >= milli and u.cpu_milli <= cpu_left and u.memory_mb <= mem_left
            ]
        else:
            whole = milli // MILLI_PER_GPU
            room = [
                (cap - u.used_milli, i)
                for i, u in enumerate(self.uses())
                if u.free_whole >= whole and u.cpu_milli <= cpu_left and u.memory_mb <= mem_left
            ]
        if len(room) < count:
            return None
        if count == 1:
            return (min(room)[1],)
        room.sort()
        return tuple(sorted(i for _, i in room[:count]))

    def fitting(self, demand: Demand) -> int:
        """How many nodes hold `demand` now."""
        size = self.size
        return sum(1 for u in self.uses() if fits(u, demand, size))

    def leftover_after(self, nodes: tuple[int, ...], demand: Demand) -> int:
        """Free milli-GPUs left on the chosen nodes after a placement: lower is a tighter fit."""
        use = self.uses()
        return sum(leftover(use[i], demand) for i in nodes)

    def gpus_on(self, nodes: tuple[int, ...], demand: Demand) -> tuple[tuple[int, ...], ...]:
        """The GPUs `demand` takes on each of `nodes` (`broker.domain.nodes.gpus_for`)."""
        use = self.uses()
        return tuple(gpus_for(use[i], demand) for i in nodes)

    def allocate(
        self,
        nodes: tuple[int, ...],
        demand: Demand,
        gpus: tuple[tuple[int, ...], ...] | None = None,
    ) -> GpuPool:
        """This pool with `demand` taken on each of `nodes` (on `gpus`, or as `gpus_on`)."""
        use = list(self.uses())
        size = self.size
        for k, i in enumerate(nodes):
            if not fits(use[i], demand, size):
                raise ValueError(f"node {i} of {self.id} has no room for {demand}")
            on = gpus_for(use[i], demand) if gpus is None else gpus[k]
            use[i] = add(use[i], on, demand)
        return replace(self, node_use=tuple(use))

    def release(
        self, nodes: tuple[int, ...], gpus: tuple[tuple[int, ...], ...], demand: Demand
    ) -> GpuPool:
        """This pool without `demand` on `nodes` (never below zero; unknown nodes skipped)."""
        use = list(self.uses())
        for i, on in zip(nodes, gpus, strict=True):
            if 0 <= i < len(use):
                use[i] = add(use[i], on, demand, sign=-1)
        return replace(self, node_use=tuple(use))

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


def default_node_names(count: int) -> tuple[str, ...]:
    """The names of a configured pool's nodes: their positions."""
    return tuple(str(i) for i in range(count))


def mig_slices(profile: str) -> int:
    """Compute slices of a MIG profile name such as "3g.40gb" (NVIDIA's naming)."""
    head, sep, _ = profile.partition("g.")
    if not sep or not head.isdigit() or int(head) < 1 or int(head) > 7:
        raise ValueError(f"not a MIG profile name: {profile!r}")
    return int(head)


def mig_milli(profile: str) -> int:
    """GPU share of a MIG slice: an A100/H100 splits into 7 compute slices. Rounded down,
    so that slices adding up to 7 fit on one GPU (7 x 1g = 7 x 142 = 994 <= 1000)."""
    return mig_slices(profile) * MILLI_PER_GPU // 7
