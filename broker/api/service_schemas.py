"""Request and response bodies of the services API (`broker.api.services`).

The request's shape is the stored spec's (`broker.domain.serde.service_spec_to_dict`), so
one mapping serves the API, the database and PATCH (a JSON merge patch of that shape,
validated whole again). The same rules as jobs: unknown fields and wrong types refused, no
NaN, infinity or NUL bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from broker.api.schemas import (
    Name,
    ObjectiveIn,
    ResourcesIn,
    WorkloadIn,
    _Request,
    _Response,
    _text,
)
from broker.domain.bounds import TIME_RANGE, time_in_range

MAX_REPLICAS = 1000


class ServiceWorkloadIn(WorkloadIn):
    port: Annotated[int, Field(ge=1, le=65535, description="The port replicas serve on.")]
    readiness_path: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^/[^\x00]*$")] = (
        Field(default="/", description="HTTP path that answers 200 once a replica is ready.")
    )


class AutoscalingIn(_Request):
    metric: Literal["rps", "concurrency"] = Field(
        default="rps", description="Requests per second, or requests in flight, per replica."
    )
    target: Annotated[float, Field(gt=0, le=1_000_000)] = Field(
        description="What one replica should take, in the metric's unit."
    )
    stable_window_s: Annotated[float, Field(ge=6, le=3600)] = Field(
        default=60.0, description="Averaging window; the panic window is a tenth of it."
    )
    scale_down_delay_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=120.0, description="Scale down only after wanting fewer for this long."
    )
    scale_to_zero_after_s: Annotated[float, Field(ge=0, le=86400)] | None = Field(
        default=300.0,
        description="With min_replicas 0: idle (no load over a stable window) this long, then"
        " no replica; null: the replica's measured start-up time (at least 30 s).",
    )
    load_query: Annotated[str, _text(max_length=4096)] | None = Field(
        default=None,
        description="PromQL for the service's total load in `metric` (when the broker reads "
        'load from Prometheus), e.g. sum(rate(http_requests_total{service="chat"}[1m])).',
    )


class OriginIn(_Request):
    location: Annotated[str, _text(max_length=128)] = Field(
        description='Where this share of the traffic comes from, e.g. "aws:us-east-1".'
    )
    share: Annotated[float, Field(gt=0, le=1)]


class ServiceIn(_Request):
    """A service. The tenant comes from the token."""

    name: Name
    priority: Literal["P1", "P2"] = Field(default="P1", description="P1 realtime, or P2.")
    resources: ResourcesIn = Field(description="Per replica; replicas run on one node each.")
    workload: ServiceWorkloadIn
    min_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = Field(
        default=1, description="0 lets the service scale to zero when idle."
    )
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    autoscaling: AutoscalingIn
    latency_slo_ms: Annotated[float, Field(gt=0, le=10_000)] | None = Field(
        default=None, description="Network round trip from the origins, share-weighted."
    )
    origins: Annotated[list[OriginIn], Field(max_length=16)] = Field(
        default=[], description="Where the traffic comes from; shares sum to 1."
    )
    allowed_regions: Annotated[
        list[Annotated[str, _text(max_length=128)]], Field(max_length=64)
    ] = []
    max_hourly_cost: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="USD per hour for all replicas together."
    )
    objective: ObjectiveIn | None = None
    spot: Literal["never", "prefer"] = Field(
        default="never", description="prefer: spot where offered, else on-demand."
    )
    critical_share: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5, description="Share of replicas that must survive the loss of any one site."
    )

    @model_validator(mode="after")
    def _coherent(self) -> ServiceIn:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        if self.resources.nodes != 1:
            raise ValueError("a replica runs on one node: resources.nodes must be 1")
        if self.origins:
            total = sum(o.share for o in self.origins)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"origins' shares must sum to 1, not {total:g}")
            if len({o.location for o in self.origins}) != len(self.origins):
                raise ValueError("each origin location once")
        if self.spot == "prefer" and self.priority == "P1":
            raise ValueError("P1 replicas are never preemptible: spot 'prefer' needs P2")
        if self.latency_slo_ms is not None and not self.origins:
            raise ValueError("latency_slo_ms needs origins to measure latency from")
        return self


class SignalIn(_Request):
    """Raise the service's floor for a period (a campaign, a launch)."""

    start: AwareDatetime | None = Field(default=None, description="Default: now.")
    until: AwareDatetime
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] | None = Field(
        default=None, description="At least this many replicas during the period."
    )
    factor: Annotated[float, Field(gt=1, le=100)] | None = Field(
        default=None, description="Or: this many times the replicas wanted when it is sent."
    )
    note: Annotated[str, _text(min_length=0, max_length=512)] = ""

    @field_validator("start", "until")
    @classmethod
    def _in_range(cls, v: datetime | None) -> datetime | None:
        if v is not None and not time_in_range(v):
            raise ValueError(TIME_RANGE)
        return v

    @model_validator(mode="after")
    def _one_size(self) -> SignalIn:
        if (self.replicas is None) == (self.factor is None):
            raise ValueError("give replicas or factor, one of them")
        if self.start is not None and self.until <= self.start:
            raise ValueError("until must be after start")
        return self


class SignalOut(_Response):
    id: int
    start: datetime
    until: datetime
    replicas: int
    note: str


class DecisionOut(_Response):
    at: datetime
    desired: int
    ready: int
    load: float | None
    mode: str
    reason: str


class ReplicaOut(_Response):
    job_id: str
    state: str
    generation: int
    ready: bool
    site: str | None
    pool_id: str | None
    started_at: datetime | None


class LoadOut(_Response):
    at: datetime
    value: float
    metric: str


class ServiceOut(_Response):
    id: str
    tenant: str
    state: Literal["active", "deleting", "deleted"]
    generation: int
    spec: ServiceIn
    desired_replicas: int
    ready_replicas: int
    replicas: list[ReplicaOut] | None = None
    load: LoadOut | None = None
    decisions: list[DecisionOut] | None = Field(
        default=None, description="The autoscaler's newest decisions first, with reasons."
    )
    signals: list[SignalOut] | None = None
    created_at: datetime
    updated_at: datetime


class ServicePageOut(_Response):
    items: list[ServiceOut]
