"""The scheduler's settings (`scheduler:` in the config) and the engine's view of them.

Each field is documented where it is declared; `engine_settings` turns the validated tree
into the pure engine's `EngineSettings`, so the domain never sees pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker.domain.engine import EngineSettings
from broker.domain.enums import Tier
from broker.domain.objective import Weights
from broker.domain.placement import power_kw
from broker.domain.policy.quotas import TierQuota
from carbon.performance import WorkloadClass
from carbon.power import GPU_MODELS, GpuModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightSettings(_Strict):
    cost: Annotated[float, Field(ge=0)] = 1.0
    latency: Annotated[float, Field(ge=0)] = 1.0
    carbon: Annotated[float, Field(ge=0)] = 1.0


def _default_weights() -> dict[Tier, WeightSettings]:
    return {
        Tier.P1: WeightSettings(cost=0.2, latency=0.6, carbon=0.2),
        # Batch and experiments lean on carbon: on the Philly sample replay this cut
        # emissions by a third against FIFO at a quarter less cost (see the issue notes).
        Tier.P2: WeightSettings(cost=0.2, latency=0.0, carbon=0.8),
        Tier.P3: WeightSettings(cost=0.2, latency=0.0, carbon=0.8),
    }


class FollowSettings(_Strict):
    """Which replica follows each site (`broker.scheduling.follow`)."""

    lease_s: Annotated[float, Field(gt=0)] = 15.0  # a dead follower's sites wait this long
    renew_s: Annotated[float, Field(gt=0)] = 5.0  # renew (or try to take over) this often
    resync_s: Annotated[float, Field(gt=0)] = 30.0  # re-check each site against the database

    @model_validator(mode="after")
    def _renew_well_within_lease(self) -> FollowSettings:
        if self.renew_s * 2 > self.lease_s:
            raise ValueError("renew_s must be at most half of lease_s")
        return self


class QuotaSettings(_Strict):
    """One tenant's quota for one tier (docs/quotas.md); a bare number is `nominal` alone."""

    # GPUs guaranteed: when the tenant needs them, it takes them back from borrowers
    nominal: Annotated[float, Field(ge=0)]
    # GPUs it may hold beyond the nominal (its cap is nominal + this); null: no cap
    borrowing_limit: Annotated[float, Field(ge=0)] | None = None

    @property
    def cap(self) -> float | None:
        return None if self.borrowing_limit is None else self.nominal + self.borrowing_limit


class SchedulerSettings(_Strict):
    interval_s: Annotated[float, Field(gt=0)] = 2.0  # periodic pass besides event wake-ups
    batch_size: Annotated[int, Field(gt=0)] = 200  # pending jobs considered per pass
    gpu_utilisation: Annotated[float, Field(gt=0, le=1)] = 0.8  # for energy estimates
    weights: dict[Tier, WeightSettings] = Field(default_factory=_default_weights)
    preemption: bool = True  # P1 (and quota owners) may preempt lower-tier preemptible work
    min_runtime_s: Annotated[float, Field(ge=0)] = 300.0  # no preemption before this runtime
    aging_per_hour: Annotated[float, Field(ge=0)] = 0.05  # fair-share credit per hour waited
    # a job whose slack to its deadline is below this goes ahead of fair-share order
    urgent_slack_s: Annotated[float, Field(ge=0)] = 6 * 3600.0
    deferral: bool = True  # hold jobs with a deadline for a cleaner window
    deferral_min_saving: Annotated[float, Field(ge=0, lt=1)] = 0.1  # fraction of gCO2e
    deferral_margin_s: Annotated[float, Field(ge=0)] = 1800.0  # slack kept before deadlines
    deferral_horizon_h: Annotated[int, Field(ge=1, le=168)] = 48  # furthest look-ahead
    # GPUs per tenant and tier (docs/quotas.md): `{tenant: {P1: 8}}` guarantees 8 (the
    # nominal); `{tenant: {P2: {nominal: 8, borrowing_limit: 4}}}` also caps it at 12.
    # Preemptible work beyond its nominal borrows idle GPUs, which the owner reclaims by
    # preemption; a tenant or tier without an entry draws from the unreserved capacity.
    # Checked at load against the tokens' tenants and the configured fleet.
    quotas: dict[str, dict[Tier, QuotaSettings]] = Field(default_factory=dict)
    # Preemptible work beyond its nominal may use GPUs other tenants' unused quotas
    # guarantee (false: only unreserved GPUs, as non-preemptible work always does).
    borrowing: bool = True
    # Run time by GPU model (docs/performance.md): a job's `estimated_duration_s` is taken
    # as measured on its `reference_gpu_model` (default A100-80GB) and scaled by relative
    # throughput on every other model, so cost, energy, emissions, deadlines and the
    # simulator see each model's own run. Off by default: the shipped table has inference
    # figures only, and with it on a pool whose model has no figure for the job's class is
    # not placeable. Turn it on once `gpu_throughput` covers your fleet.
    gpu_performance: bool = False
    # Throughput relative to A100-80GB (= 1.0), by GPU model (exact pool name) and class
    # (`training`, `inference`), e.g. {H100: {training: 2.1}}; wins over the shipped table.
    gpu_throughput: dict[str, dict[WorkloadClass, Annotated[float, Field(gt=0, le=1000)]]] = Field(
        default_factory=dict
    )

    # Weight of the packing term (`broker.domain.packing`), the same
    # for every tier, next to the tier's cost, latency and carbon weights (which sum to 1):
    # keeps queued large jobs' whole nodes whole and scarce GPU models for the work pinned
    # to them. 0 turns it off.
    packing_weight: Annotated[float, Field(ge=0, le=1)] = 0.25
    follow: FollowSettings = Field(default_factory=FollowSettings)
    # One replica at a time runs the passes (the lease `scheduler`, the same timings as
    # `follow`); the others stand by and take over when it dies. False: every replica runs
    # passes, which is safe (each commit is a compare-and-set) but wastes work on conflicts.
    exclusive: bool = True

    @field_validator("quotas", mode="before")
    @classmethod
    def _bare_numbers_are_nominal(cls, v: Any) -> Any:
        """`{P1: 8}` is `{P1: {nominal: 8}}` (the original shape of the setting)."""
        if not isinstance(v, dict):
            return v
        return {
            tenant: {
                tier: {"nominal": q}
                if isinstance(q, int | float) and not isinstance(q, bool)
                else q
                for tier, q in by_tier.items()
            }
            if isinstance(by_tier, dict)
            else by_tier
            for tenant, by_tier in v.items()
        }

    @field_validator("weights")
    @classmethod
    def _every_tier(cls, v: dict[Tier, WeightSettings]) -> dict[Tier, WeightSettings]:
        """Tiers left out of the file keep their defaults."""
        return {**_default_weights(), **v}


def engine_settings(
    settings: SchedulerSettings, *, power: Mapping[str, GpuModelSpec] | None = None
) -> EngineSettings:
    """The engine's settings; `power`: the deployment's power table
    (`Settings.power_table()`, default the shipped datasheet table)."""
    return EngineSettings(
        weights={
            tier: Weights(cost=w.cost, latency=w.latency, carbon=w.carbon)
            for tier, w in settings.weights.items()
        },
        gpu_utilisation=settings.gpu_utilisation,
        preemption=settings.preemption,
        min_runtime_s=settings.min_runtime_s,
        aging_per_hour=settings.aging_per_hour,
        urgent_slack_s=settings.urgent_slack_s,
        deferral=settings.deferral,
        deferral_min_saving=settings.deferral_min_saving,
        deferral_margin_s=settings.deferral_margin_s,
        deferral_horizon_h=settings.deferral_horizon_h,
        quotas={
            tenant: {
                tier: TierQuota(nominal=q.nominal, borrowing_limit=q.borrowing_limit)
                for tier, q in by_tier.items()
            }
            for tenant, by_tier in settings.quotas.items()
        },
        borrowing=settings.borrowing,
        gpu_performance=settings.gpu_performance,
        gpu_throughput={
            m: {c.value: v for c, v in by_class.items()}
            for m, by_class in settings.gpu_throughput.items()
        },
        power_kw=power_kw(GPU_MODELS if power is None else power),
        packing_weight=settings.packing_weight,
    )
