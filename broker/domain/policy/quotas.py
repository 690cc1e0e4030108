"""Per-tenant GPU quotas per tier, borrowing idle capacity, and reclaiming it.

Rules:

* A quota is a number of GPUs guaranteed to a tenant for one tier:
  `Quotas = Mapping[tenant, Mapping[Tier, float]]`. A tenant or tier that is absent has
  no guarantee (quota 0) but may still borrow. An empty mapping means quotas are not
  configured: every job is allowed, none is borrowed.
* The ledger counts the GPUs (milli-GPUs / 1000, all nodes) each tenant holds per tier,
  from the running work, and separately how many of them are borrowed.
* A job is wholly in quota or wholly borrowed (it cannot be half preempted):
  - `used + gpus <= quota`: allowed, not borrowed;
  - otherwise, when borrowing is enabled and `gpus <= idle_gpus`: allowed, borrowed
    (the engine marks the work `borrowed=True`, so an owner can reclaim it);
  - otherwise refused, with the numbers in the reason.
  `idle_gpus` is what the engine says is free right now on the pools the job could use;
  this module does not try to work out which free GPUs other quotas claim.
* An owner may reclaim from borrowers when it is below its quota for the tier (or, given
  the job's size, when the job fits in what is left of its quota) and some other tenant
  holds borrowed work. The engine then calls `choose_victims(owner_tenant=...)`, which
  may pick borrowed work of any tier.
* Note: `used` counts borrowed work too. A tenant that borrowed and whose in-quota jobs
  then finished keeps its `borrowed` flags until those jobs end; they remain reclaimable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from broker.domain.enums import Tier
from broker.domain.fleet import MILLI_PER_GPU
from broker.domain.work import RunningWork

Quotas = Mapping[str, Mapping[Tier, float]]

_EPS = 1e-9  # GPUs are counted as floats (fractions and MIG slices); absorb rounding


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaLedger:
    """GPUs held per (tenant, tier) right now, and how many of them are borrowed."""

    used: Mapping[tuple[str, Tier], float] = field(default_factory=dict)
    borrowed: Mapping[tuple[str, Tier], float] = field(default_factory=dict)

    @classmethod
    def from_running(cls, running: Sequence[RunningWork]) -> QuotaLedger:
        used: dict[tuple[str, Tier], float] = {}
        borrowed: dict[tuple[str, Tier], float] = {}
        for w in running:
            key = (w.tenant, w.tier)
            gpus = w.gpu_milli / MILLI_PER_GPU
            used[key] = used.get(key, 0.0) + gpus
            if w.borrowed:
                borrowed[key] = borrowed.get(key, 0.0) + gpus
        return cls(used=used, borrowed=borrowed)

    def used_gpus(self, *, tenant: str, tier: Tier) -> float:
        return self.used.get((tenant, tier), 0.0)

    def borrowed_gpus(self, *, tenant: str, tier: Tier) -> float:
        return self.borrowed.get((tenant, tier), 0.0)

    def borrowers(self, *, excluding: str | None = None) -> tuple[str, ...]:
        """Tenants holding borrowed GPUs (any tier), sorted."""
        return tuple(
            sorted({t for (t, _), g in self.borrowed.items() if g > _EPS and t != excluding})
        )

    def add(self, *, tenant: str, tier: Tier, gpus: float, borrowed: bool) -> QuotaLedger:
        """This ledger with one more placement, so one scheduling pass can place several jobs."""
        key = (tenant, tier)
        used = dict(self.used)
        used[key] = used.get(key, 0.0) + gpus
        lent = dict(self.borrowed)
        if borrowed:
            lent[key] = lent.get(key, 0.0) + gpus
        return QuotaLedger(used=used, borrowed=lent)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaDecision:
    allowed: bool
    borrowed: bool  # allowed only on idle capacity: reclaimable by quota owners
    reason: str


def quota_of(quotas: Quotas, *, tenant: str, tier: Tier) -> float:
    """The tenant's guaranteed GPUs for the tier; 0 when none is configured."""
    return quotas.get(tenant, {}).get(tier, 0.0)


def check(
    *,
    tenant: str,
    tier: Tier,
    gpus: float,
    ledger: QuotaLedger,
    quotas: Quotas,
    idle_gpus: float,
    borrowing: bool,
) -> QuotaDecision:
    """Whether a job of `gpus` GPUs may start now: in quota, as borrowed work, or not at all."""
    if not quotas:
        return QuotaDecision(allowed=True, borrowed=False, reason="no quotas configured")
    quota = quota_of(quotas, tenant=tenant, tier=tier)
    used = ledger.used_gpus(tenant=tenant, tier=tier)
    where = f"tenant {tenant} at {used:g}/{quota:g} GPUs of its {tier} quota"
    if used + gpus <= quota + _EPS:
        return QuotaDecision(
            allowed=True, borrowed=False, reason=f"{where}; {gpus:g} more fit in quota"
        )
    if not borrowing:
        return QuotaDecision(
            allowed=False,
            borrowed=False,
            reason=f"{where}; {gpus:g} more would exceed it and borrowing is disabled",
        )
    if gpus > idle_gpus + _EPS:
        return QuotaDecision(
            allowed=False,
            borrowed=False,
            reason=f"{where}; cannot borrow {gpus:g} GPUs, only {idle_gpus:g} idle",
        )
    return QuotaDecision(
        allowed=True,
        borrowed=True,
        reason=f"{where}; borrowing {gpus:g} idle GPUs, reclaimable by quota owners",
    )


def reclaimable(
    *,
    owner_tenant: str,
    ledger: QuotaLedger,
    quotas: Quotas,
    tier: Tier,
    gpus: float | None = None,
) -> bool:
    """Whether `owner_tenant` may preempt other tenants' borrowed work to get its quota back.

    Without `gpus`, the owner must be strictly below its quota for `tier`; with it, the
    job of that size must fit in what is left of the quota (reclaiming for a job that
    would itself exceed the quota would only turn it into borrowed work).
    """
    quota = quota_of(quotas, tenant=owner_tenant, tier=tier)
    used = ledger.used_gpus(tenant=owner_tenant, tier=tier)
    under = used < quota - _EPS if gpus is None else used + gpus <= quota + _EPS
    return under and bool(ledger.borrowers(excluding=owner_tenant))
