"""The body of `GET /v1/jobs/{id}/explain`: a submitted job as the scheduler sees it now.

Users see their own job's figures; of other tenants' work only what `/v1/jobs` would
show them anyway: a preemption candidate of another tenant is shown by tier and size,
without its id or tenant (`broker.api.convert`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class QuotaOut(_Response):
    """The quota check (docs/quotas.md), in GPUs of the job's tier."""

    allowed: bool
    borrowed: bool  # beyond the nominal and preemptible: the owner may reclaim it
    reason: str
    code: str | None  # QuotaCapReached or QuotaReserved when refused
    nominal: float  # guaranteed to the tenant for the tier (0 without an entry)
    cap: float | None  # nominal + borrowing_limit; null: no cap
    used: float  # held by the tenant in the tier now
    # null for users (how full the fleet is stays with operators, as in /v1/inventory):
    free: float | None  # free on the pools the job could use
    reserved: float | None  # other tenants' unused guarantees
    unreserved: float | None  # free - reserved


class StandingOut(_Response):
    """Where the job stands in the pass's order: tier, urgency, then fair share."""

    position: int  # 1-based
    queue_length: int
    ahead_same_tier: int
    tenant_share: float  # the tenant's dominant share of the fleet now, 0-1


class VictimOut(_Response):
    job_id: str | None  # null: another tenant's job
    tenant: str | None
    tier: str
    gpus: float
    gpu_seconds_lost: float
    borrowed: bool


class JobExplainOut(_Response):
    job_id: str
    state: str
    evaluated_at: datetime
    outcome: str  # place, defer or wait: what a pass now would do
    reason: str | None  # the condition reason when it would wait
    message: str
    site: str | None
    pool_id: str | None
    deferred_until: datetime | None
    deferral: str
    borrowed: bool
    quota: QuotaOut | None  # null: no quotas configured
    standing: StandingOut
    preemption: str
    victims: list[VictimOut]
