"""Sites and the GPU pools they offer.

A pool is a homogeneous group of nodes on one site (same GPU model, same GPUs per node).
Capacity is counted in milli-GPUs so that fractional and MIG requests share one integer
ledger with whole-GPU requests: 1 GPU = 1000 units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from broker.domain.enums import Health, SiteKind

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
    allocated_milli: int = 0
    updated_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

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
