"""Request and response bodies of the API, validated with pydantic.

Requests forbid unknown fields and are parsed strictly (no "4" for 4), so a typo or a wrong
type is a 422 naming the field instead of a silently different job. They also refuse what
the store cannot keep or the scheduler cannot compute with (`broker.domain.bounds`): NaN and
infinite numbers, NUL bytes in any string, times near the ends of the calendar. These models
are also the source of the OpenAPI document (`broker.api.openapi`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from broker.domain.bounds import NO_NUL, TIME_RANGE, time_in_range

# A node pool's name, as sites declare them: a DNS-1123 label.
NODE_POOL_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _text(*, max_length: int, min_length: int = 1) -> Any:
    """A string's constraints: its length, and no NUL byte."""
    return Field(min_length=min_length, max_length=max_length, pattern=NO_NUL)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ResourcesIn(_Request):
    gpus: Annotated[int, Field(ge=1, le=64, description="GPUs per node.")] = 1
    gpu_models: Annotated[
        list[Annotated[str, _text(max_length=64)]],
        Field(max_length=16, description="Acceptable GPU models, any of; empty means any."),
    ] = []
    min_gpu_memory_gb: Annotated[float, Field(gt=0, le=1024)] | None = None
    mig_profile: Annotated[str, Field(pattern=r"^[1-7]g\.[0-9]+gb$")] | None = Field(
        default=None, description='A MIG slice such as "1g.10gb"; excludes gpu_fraction.'
    )
    gpu_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None, description="A share of one GPU (0-1, exclusive); excludes mig_profile."
    )
    nodes: Annotated[int, Field(ge=1, le=256, description="Nodes, all at once (gang).")] = 1
    cpu: Annotated[float, Field(gt=0, le=1024, description="CPUs per node.")] = 1.0
    memory_gb: Annotated[float, Field(gt=0, le=16384, description="Memory per node.")] = 4.0

    @model_validator(mode="after")
    def _shared_gpu(self) -> ResourcesIn:
        if self.mig_profile is not None and self.gpu_fraction is not None:
            raise ValueError("give either mig_profile or gpu_fraction, not both")
        if (self.mig_profile is not None or self.gpu_fraction is not None) and self.gpus != 1:
            raise ValueError("a MIG slice or GPU fraction is a share of one GPU: gpus must be 1")
        return self


class WorkloadIn(_Request):
    image: Annotated[str, _text(max_length=512)]
    command: Annotated[
        list[Annotated[str, _text(min_length=0, max_length=4096)]], Field(max_length=256)
    ] = []
    env: Annotated[
        dict[
            Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)],
            Annotated[str, _text(min_length=0, max_length=32768)],
        ],
        Field(max_length=256),
    ] = {}


# What `ObjectiveIn._some_weight` checks, said in JSON Schema: one of the weights is given
# and positive (so `{}` or all zeros is refused by the document as by the code).
_SOME_WEIGHT: JsonDict = {
    "anyOf": [
        {"required": [w], "properties": {w: {"exclusiveMinimum": 0}}}
        for w in ("cost", "latency", "carbon")
    ]
}


class ObjectiveIn(_Request):
    """Relative weights of cost, latency and carbon for this job (normalised to sum 1)."""

    model_config = ConfigDict(json_schema_extra=_SOME_WEIGHT)

    cost: Annotated[float, Field(ge=0, le=1000)] = 0.0
    latency: Annotated[float, Field(ge=0, le=1000)] = 0.0
    carbon: Annotated[float, Field(ge=0, le=1000)] = 0.0

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveIn:
        if self.cost + self.latency + self.carbon <= 0:
            raise ValueError("give at least one positive weight")
        return self


class JobIn(_Request):
    """A job submission. The tenant comes from the token, never from the body."""

    name: Name
    priority: Literal["P1", "P2", "P3"] = Field(
        description="P1 realtime inference, P2 batch training, P3 experiments."
    )
    kind: Literal["inference", "training", "experiment"]
    resources: ResourcesIn
    workload: WorkloadIn
    estimated_duration_s: Annotated[int, Field(gt=0, le=90 * 24 * 3600)]
    deadline: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with offset, in the years 1970 to 2999."
    )
    latency_slo_ms: Annotated[float, Field(gt=0, le=10_000)] | None = None
    origin: Annotated[str, _text(max_length=128)] | None = Field(
        default=None, description='Where requests come from, e.g. "aws:eu-west-1".'
    )
    allowed_regions: Annotated[
        list[Annotated[str, _text(max_length=128)]], Field(max_length=64)
    ] = []
    preemptible: bool | None = Field(default=None, description="Default: true for P3 only.")
    max_hourly_cost: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="USD per hour for the whole job."
    )
    objective: ObjectiveIn | None = Field(
        default=None, description="Overrides the tier's cost/latency/carbon weights."
    )
    reference_gpu_model: Annotated[str, _text(max_length=64)] | None = Field(
        default=None,
        description="The GPU model estimated_duration_s was measured on (default A100-80GB); "
        "with the scheduler's gpu_performance on, the run on each model is scaled from it.",
    )
    node_pool: Annotated[str, Field(pattern=NODE_POOL_NAME)] | None = Field(
        default=None,
        description="A node pool a site declares (its connector's node_pools) by name: only "
        "pools in a node pool of that name take the job. Default: any pool whose node pool "
        "takes the job's priority and kind.",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline_in_range(cls, v: datetime | None) -> datetime | None:
        if v is not None and not time_in_range(v):
            raise ValueError(TIME_RANGE)
        return v

    @model_validator(mode="after")
    def _coherent(self) -> JobIn:
        if self.latency_slo_ms is not None and self.origin is None:
            raise ValueError("latency_slo_ms needs an origin to measure latency from")
        if self.priority == "P1" and self.preemptible:
            raise ValueError("P1 work is never preemptible")
        return self


class ProblemField(_Response):
    field: str
    message: str
    type: str


class Problem(_Response):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


class EventOut(_Response):
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    detail: str


class PlacementOut(_Response):
    site: str
    pool_id: str
    gpus: float
    price_per_gpu_hour: float
    spot: bool
    estimated_cost_usd: float
    estimated_gco2: float | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class ConditionOut(_Response):
    """Why the job is not running now, like a Kubernetes condition: `type` Waiting,
    Deferred or Preempted; `reason` a CamelCase code (docs/quotas.md lists them);
    `since` when this reason began (a fresher message keeps it)."""

    type: str
    reason: str
    message: str
    since: datetime


class JobOut(_Response):
    id: str
    tenant: str
    name: str
    priority: str
    kind: str
    state: str
    state_reason: str
    preemptible: bool
    created_at: datetime
    updated_at: datetime
    spec: JobIn
    placement: PlacementOut | None = None
    events: list[EventOut] | None = None
    condition: ConditionOut | None = None  # null when placed, running or ended


class JobPageOut(_Response):
    items: list[JobOut]
    next_cursor: str | None


class SiteOut(_Response):
    name: str
    kind: str
    region: str
    location: str
    grid_zone: str
    private: bool
    pue: float
    health: str
    health_reason: str


class SiteListOut(_Response):
    items: list[SiteOut]


class InventoryRowOut(_Response):
    site: str
    pool_id: str
    gpu_model: str
    gpu_memory_gb: float
    gpus_per_node: int
    nodes: int
    mig_profiles: list[str]
    total_gpus: float
    allocated_gpus: float
    free_gpus: float
    price_on_demand: float
    price_spot: float | None
    grid_zone: str
    carbon_intensity_gco2_per_kwh: float | None
    health: str


class InventoryOut(_Response):
    items: list[InventoryRowOut]


class CandidateOut(_Response):
    rank: int
    site: str
    pool_id: str
    gpu_model: str
    gpus: float
    hourly_cost_usd: float
    cost_usd: float
    latency_ms: float | None
    carbon_intensity_gco2_per_kwh: float | None
    energy_kwh: float
    gco2: float | None
    duration_s: float  # the run on this pool's GPU model (the estimate unless gpu_performance)
    cost_term: float
    latency_term: float
    carbon_term: float
    # weighted by scheduler.packing_weight (broker.domain.packing); null for users: it is
    # how full the pool's nodes are, which only operators see (as in /v1/inventory)
    packing_term: float | None
    score: float
    # Which carbon source answers for the site's zone now: "static" is a flat annual mean
    # (hourly false); any other (replay, a live provider, the own forecast) is hourly.
    intensity_source: str | None = None
    hourly: bool | None = None


class RejectionOut(_Response):
    site: str
    pool_id: str
    reason: str
    detail: str


class WeightsOut(_Response):
    cost: float
    latency: float
    carbon: float


class ExplainOut(_Response):
    winner: CandidateOut | None
    candidates: list[CandidateOut]
    rejected: list[RejectionOut]
    weights: WeightsOut
    note: str
    basis: str | None = None  # the carbon accounting basis of every intensity (carbon.basis)


class HealthOut(_Response):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class TokenOut(_Response):
    name: str
    tenant: str
    role: str


class TokenListOut(_Response):
    items: list[TokenOut]


class CheckItemOut(_Response):
    name: str
    ok: bool
    detail: str
    hint: str = ""  # what to do about a failed item


class ProviderOut(_Response):
    site: str
    kind: str
    credentials: str  # by reference: a profile, a key file's path, a kubeconfig context
    lacks: list[str]
    ok: bool
    checks: list[CheckItemOut]
    checked_at: datetime


class ProviderListOut(_Response):
    items: list[ProviderOut]


class ScheduledJobOut(_Response):
    job: str
    last_started_at: datetime | None
    last_finished_at: datetime | None
    outcome: str | None  # running, ok, failed, cancelled
    summary: str
    next_run_at: datetime | None
    runs: int
    failures: int


class ScheduleOut(_Response):
    """Who runs the scheduled duties, and how they went on this replica."""

    replica: str
    is_leader: bool
    leader: str | None
    leader_since: datetime | None
    lease_expires_at: datetime | None
    last_error: str | None
    jobs: list[ScheduledJobOut]
