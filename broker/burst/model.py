"""The burst planner's inputs and outputs: plain values, so the planner stays pure.

The service side (`broker.burst.gather`) fills these from the store, the connectors and the
carbon source; `broker.burst.planner.plan` turns them into actions; `broker.burst.burster`
carries the actions out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from broker.domain.enums import Tier
from broker.domain.fleet import MILLI_PER_GPU

OfferKey = tuple[str, str]  # (provider site, GPU model)


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingJob:
    """A pending job that no pool can take now, as the planner sees it."""

    id: str
    tenant: str
    tier: Tier
    gpu_models: tuple[str, ...]  # any of these; empty = any model
    milli_per_node: int
    nodes: int
    waited_s: float
    estimated_duration_s: float
    origin: str | None = None  # latency-matrix key of where its users are
    blocked: str = "no pool has room"  # why nothing takes it now (the evaluation's answer)
    # Offers (pool ids) whose instances, once joined, could run it (memory, region, latency
    # SLO, the joined site's abilities...); None: every offer its model and GPUs fit.
    pools: frozenset[str] | None = None

    @property
    def gpus(self) -> float:
        return self.milli_per_node * self.nodes / MILLI_PER_GPU


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """The instance shape a target starts for a GPU model in one market (on-demand or spot),
    with what it costs and emits per hour. The connector picks the shape from the model
    alone (cheapest per GPU-hour, then fewer GPUs), so a target has at most one offer per
    model and market, chosen by that same rule (`broker.burst.gather.offers_of`)."""

    provider_site: str
    joins_site: str
    pool_id: str
    gpu_model: str
    gpus_per_instance: int
    price: float  # USD per GPU-hour in this market
    spot: bool
    intensity_gco2_per_kwh: float | None  # the target's grid zone now; None when unknown
    board_power_w: float  # per GPU, the upper bound of what it draws
    pue: float
    location: str  # latency-matrix key of the target's region

    @property
    def key(self) -> OfferKey:
        return (self.provider_site, self.gpu_model)

    @property
    def gco2e_per_gpu_hour(self) -> float | None:
        if self.intensity_gco2_per_kwh is None:
            return None
        return self.board_power_w / 1000 * self.pue * self.intensity_gco2_per_kwh

    @property
    def usd_per_instance_hour(self) -> float:
        return self.price * self.gpus_per_instance

    @property
    def gco2e_per_instance_hour(self) -> float | None:
        per_gpu = self.gco2e_per_gpu_hour
        return None if per_gpu is None else per_gpu * self.gpus_per_instance


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """Burst capacity that exists or is on its way, and what it has cost today."""

    alive: Mapping[OfferKey, int] = field(default_factory=dict)  # instances per target/model
    alive_gpus: Mapping[str, float] = field(default_factory=dict)  # GPUs per model
    covered_jobs: frozenset[str] = frozenset()  # jobs an unfinished burst is for
    failed_until: Mapping[OfferKey, datetime] = field(default_factory=dict)
    spent_usd: float = 0.0  # today, every burst instance
    spent_by_tenant: Mapping[str, float] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(self.alive.values())


class SkipReason(enum.StrEnum):
    BUDGET = "budget"
    TENANT_BUDGET = "tenant_budget"
    MAX_INSTANCES = "max_instances"
    MAX_BURST = "max_per_action"
    FAILED_RECENTLY = "failed_recently"
    NO_OFFER = "no_offer"


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """Demand the plan could not serve this time, and why."""

    reason: SkipReason
    detail: str
    job_ids: tuple[str, ...] = ()
    gpu_model: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstAction:
    """Start `count` instances of `offer`."""

    offer: Offer
    count: int
    reason: str
    for_jobs: tuple[str, ...] = ()
    tenants: Mapping[str, float] = field(default_factory=dict)  # tenant → share of the cost
    expected_usd: float = 0.0  # over the hours it is expected to run, for the budget

    @property
    def spot(self) -> bool:
        return self.offer.spot

    @property
    def provider_site(self) -> str:
        return self.offer.provider_site

    @property
    def joins_site(self) -> str:
        return self.offer.joins_site

    @property
    def gpu_model(self) -> str:
        return self.offer.gpu_model

    @property
    def usd_per_hour(self) -> float:
        return self.offer.usd_per_instance_hour * self.count

    @property
    def gco2e_per_hour(self) -> float | None:
        per = self.offer.gco2e_per_instance_hour
        return None if per is None else per * self.count


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    actions: tuple[BurstAction, ...] = ()
    skipped: tuple[Skipped, ...] = ()
