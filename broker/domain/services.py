"""Inference services: long-running, replicated work that scales with its traffic.

A service is what each replica runs and needs, how many replicas it may have, what it
scales on (requests per second or in-flight requests per replica), and where its traffic
comes from (origins with their shares). Its replicas are jobs of kind inference, derived by
`replica_spec`: the same engine places each one (feasibility, preemption of lower tiers,
quotas, cost and carbon terms), with latency judged from the service's origins weighted by
their shares (`broker.domain.latency.mixed_origin`). A replica runs until the broker stops
it; its estimated duration is only the horizon its cost and carbon are judged over.

A change of what replicas run (image, command, env, resources) starts a new `generation`;
replicas of the old one are replaced by a rolling update that never drops below the ready
capacity (`broker.serving`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from broker.domain.autoscale import LoadMetric
from broker.domain.enums import JobKind, Tier
from broker.domain.jobs import Endpoint, JobSpec, Resources, Workload
from broker.domain.latency import mixed_origin
from broker.domain.objective import Weights

# A replica's cost, energy and carbon terms are judged over this horizon when it is placed.
PLANNING_HORIZON_S = 3600


class SpotPolicy(enum.StrEnum):
    NEVER = "never"  # on-demand only
    PREFER = "prefer"  # spot where offered, on-demand where not (or when spot is gone)


class ServiceState(enum.StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"  # draining: no new replicas, the old ones stopped, then gone
    DELETED = "deleted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    location: str  # `cloud:region`, as the latency matrix names it
    share: float  # of the service's traffic, (0, 1]; shares sum to 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSpec:
    name: str
    tier: Tier
    resources: Resources  # per replica
    workload: Workload
    port: int
    readiness_path: str = "/"
    min_replicas: int = 1  # 0: scale to zero when idle
    max_replicas: int = 1
    metric: LoadMetric = LoadMetric.RPS  # what `target` counts, per replica
    target: float = 10.0  # per replica, in the metric's unit
    stable_window_s: float = 60.0  # the autoscaler's averaging window (panic: a tenth)
    scale_down_delay_s: float = 120.0  # hold the highest recent want this long
    # with min 0: idle this long before going to zero; None: a replica's start-up time
    scale_to_zero_after_s: float | None = 300.0
    # PromQL giving the service's total load in `metric` (with `serving.load: prometheus`)
    load_query: str | None = None
    latency_slo_ms: float | None = None  # network round trip from the origins
    origins: tuple[Origin, ...] = ()
    allowed_regions: tuple[str, ...] = ()
    max_hourly_cost: float | None = None  # USD per hour for all replicas together
    objective: Weights | None = None
    spot: SpotPolicy = SpotPolicy.NEVER
    # the share of replicas that must survive the loss of any one site (`broker.domain.spread`)
    critical_share: float = 0.5

    @property
    def origin(self) -> str | None:
        return mixed_origin([(o.location, o.share) for o in self.origins])

    def same_replicas(self, other: ServiceSpec) -> bool:
        """Whether replicas of `other` run what replicas of this spec run (no new
        generation needed: only bounds, target or placement preferences differ)."""
        return (self.resources, self.workload, self.port, self.readiness_path) == (
            other.resources,
            other.workload,
            other.port,
            other.readiness_path,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    id: str
    tenant: str
    spec: ServiceSpec
    state: ServiceState
    generation: int  # bumped when what replicas run changes
    created_at: datetime
    updated_at: datetime
    desired: int = 0  # the autoscaler's last decision


def replica_spec(service: Service, *, regions: tuple[str, ...] | None = None) -> JobSpec:
    """The job one replica of `service` is: placed like any job, run until stopped.
    `regions` pins it (the spread across sites picks them); default the service's own."""
    spec = service.spec
    return JobSpec(
        name=f"{spec.name}-g{service.generation}",
        tier=spec.tier,
        kind=JobKind.INFERENCE,
        resources=spec.resources,
        workload=replace(
            spec.workload,
            env={**spec.workload.env, "PORT": str(spec.port)},
        ),
        estimated_duration_s=PLANNING_HORIZON_S,
        latency_slo_ms=spec.latency_slo_ms,
        origin=spec.origin,
        allowed_regions=spec.allowed_regions if regions is None else regions,
        # spot capacity is what preemptible work is priced at (on-demand where a pool has
        # no spot price); a P1 replica is never preemptible, so never on spot
        preemptible=spec.spot is SpotPolicy.PREFER and spec.tier is not Tier.P1,
        objective=spec.objective,
        service_id=service.id,
        generation=service.generation,
        endpoint=Endpoint(port=spec.port, readiness_path=spec.readiness_path),
    )
