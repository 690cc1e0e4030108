"""Jobs, what they ask for, where they run and what happened to them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from broker.domain.conditions import Condition
from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.fleet import MILLI_PER_GPU, mig_milli
from broker.domain.nodes import Demand, demand_of
from broker.domain.objective import Weights


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """What one job needs. `gpus` is per node; a gang job needs all `nodes` at once."""

    gpus: int = 1
    gpu_models: tuple[str, ...] = ()  # any of these; empty = any model
    min_gpu_memory_gb: float | None = None
    mig_profile: str | None = None
    gpu_fraction: float | None = None
    nodes: int = 1
    cpu: float = 1.0  # per node
    memory_gb: float = 4.0  # per node

    @property
    def shared_gpu(self) -> bool:
        return self.mig_profile is not None or self.gpu_fraction is not None

    @property
    def milli_per_node(self) -> int:
        if self.mig_profile is not None:
            return mig_milli(self.mig_profile)
        if self.gpu_fraction is not None:
            return math.ceil(self.gpu_fraction * MILLI_PER_GPU)
        return self.gpus * MILLI_PER_GPU

    @property
    def demand(self) -> Demand:
        """What it takes on each of its nodes."""
        return demand_of(self.milli_per_node, self.cpu, self.memory_gb)

    @property
    def total_milli(self) -> int:
        return self.milli_per_node * self.nodes

    @property
    def gpu_equivalents(self) -> float:
        return self.total_milli / MILLI_PER_GPU


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    image: str
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where a service replica answers: its port and the HTTP path that says it is ready."""

    port: int
    readiness_path: str = "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """A job as its owner described it; everything the scheduler needs to place it."""

    name: str
    tier: Tier
    kind: JobKind
    resources: Resources
    workload: Workload
    estimated_duration_s: int
    deadline: datetime | None = None
    latency_slo_ms: float | None = None
    origin: str | None = None
    allowed_regions: tuple[str, ...] = ()
    preemptible: bool | None = None  # None: the tier's default
    max_hourly_cost: float | None = None
    objective: Weights | None = None  # overrides the tier's weights for this job
    # the GPU model `estimated_duration_s` was measured on; None: DEFAULT_REFERENCE
    reference_gpu_model: str | None = None
    # a replica of this service (`broker.domain.services`): it runs until stopped, and
    # `estimated_duration_s` is only the horizon its terms are judged over
    service_id: str | None = None
    generation: int = 0  # of the service's spec this replica runs
    endpoint: Endpoint | None = None  # a replica's port and readiness path
    # a site-declared node pool by name (`fleet.NodePoolScope`): only pools in one with
    # this name take the job; None: any pool whose node pool takes its tier and kind
    node_pool: str | None = None

    @property
    def is_preemptible(self) -> bool:
        return self.preemptible if self.preemptible is not None else self.tier is Tier.P3


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    tenant: str
    spec: JobSpec
    state: JobState
    created_at: datetime
    updated_at: datetime
    state_reason: str = ""
    version: int = 1
    condition: Condition | None = None  # why it is not running now (`domain.conditions`)


def draft(spec: JobSpec, *, tenant: str, at: datetime) -> Job:
    """A job not submitted (yet): what the engine is asked about in a dry run."""
    return Job(
        id="job-draft",
        tenant=tenant,
        spec=spec,
        state=JobState.PENDING,
        created_at=at,
        updated_at=at,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where a job was put, at what price, and its estimated footprint."""

    job_id: str
    site: str
    pool_id: str
    gpu_milli: int
    price_per_gpu_hour: float
    spot: bool
    estimated_cost_usd: float
    estimated_gco2: float | None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    external_id: str | None = None
    # which nodes of the pool (by name), and which GPUs on each; one per job node
    node_names: tuple[str, ...] = ()
    node_gpus: tuple[tuple[int, ...], ...] = ()
    cpu_milli: int = 0  # per node
    memory_mb: int = 0  # per node
    borrowed: bool = False  # placed on GPUs beyond the tenant's quota
    # This placement's run, unique per placement: status updates name it, so one from an
    # earlier run of the same job is never applied to this one ("" before migration 0010)
    run: str = ""

    @property
    def milli_per_node(self) -> int:
        return self.gpu_milli // max(1, len(self.node_names))

    @property
    def demand(self) -> Demand:
        return Demand(self.milli_per_node, self.cpu_milli, self.memory_mb)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent:
    job_id: str
    at: datetime
    from_state: JobState | None
    to_state: JobState
    reason: str
    detail: str = ""
