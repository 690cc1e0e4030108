"""The `burst:` settings: when to add cloud capacity, where, how much, and when to let it go.

A burst target pairs a cloud site (kind aws or gcp, which provisions instances) with the
Kubernetes site its instances join through their user data or startup script: the cloud
site cannot run jobs itself (it lacks DISPATCH), the joined cluster runs them.

Wait targets are per tier; a tier without one (P3 by default) never bursts on its own
waiting, only through the demand forecast. Budget caps are in USD per UTC day and count
what burst instances have cost since midnight plus what a new burst is expected to cost
(see `broker.burst.planner`); they stop new bursts, they never stop running capacity.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.domain.enums import Tier


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BurstTarget(_Strict):
    """A cloud site to provision in, and the Kubernetes site its instances join."""

    provider: Annotated[str, Field(min_length=1, max_length=64)]
    joins: Annotated[str, Field(min_length=1, max_length=64)]


class BurstWeights(_Strict):
    """How to trade the candidate regions off against each other (min-max normalised)."""

    cost: Annotated[float, Field(ge=0)] = 0.4
    latency: Annotated[float, Field(ge=0)] = 0.2
    carbon: Annotated[float, Field(ge=0)] = 0.4


def _default_waits() -> dict[Tier, float]:
    return {Tier.P1: 60.0, Tier.P2: 1800.0}


class BurstSettings(_Strict):
    enabled: bool = False
    targets: tuple[BurstTarget, ...] = ()
    # Instances alive or asked for, over every target together.
    max_instances: Annotated[int, Field(ge=0)] = 8
    # Instances one planning pass may start in all (the size of one burst).
    max_per_action: Annotated[int, Field(ge=1)] = 4
    budget_usd_per_day: Annotated[float, Field(ge=0)] | None = None
    tenant_budget_usd_per_day: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict
    )
    # Seconds a job may wait for capacity before its tier bursts; absent tiers never do.
    wait_target_s: dict[Tier, Annotated[float, Field(ge=0)]] = Field(default_factory=_default_waits)
    forecast_quantile: Annotated[float, Field(gt=0, lt=1)] = 0.9
    lookahead_h: Annotated[int, Field(ge=1, le=48)] = 2
    # Tiers whose bursts buy spot capacity (it may be taken back); the others on-demand.
    spot_tiers: frozenset[Tier] = frozenset({Tier.P3})
    idle_ttl_s: Annotated[float, Field(ge=0)] = 1800.0
    # An instance whose node has not joined its cluster by then failed to boot: released.
    join_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    # How long a target and GPU model that refused capacity are left out of plans.
    failure_memory_s: Annotated[float, Field(ge=0)] = 900.0
    weights: BurstWeights = BurstWeights()
    # Pending jobs looked at per planning pass (oldest first within each tier).
    queue_limit: Annotated[int, Field(gt=0)] = 500

    @model_validator(mode="after")
    def _consistent(self) -> BurstSettings:
        providers = [t.provider for t in self.targets]
        if len(providers) != len(set(providers)):
            raise ValueError("each burst target's provider site may appear once")
        return self

    def target(self, provider: str) -> BurstTarget | None:
        return next((t for t in self.targets if t.provider == provider), None)
