"""Per-tenant GPU quotas per tier: a guarantee (nominal) and a cap (borrowing limit).

The model follows Kueue's ClusterQueue (docs/quotas.md cites it), with one tenant × tier
entry in the role of a ClusterQueue and the whole fleet as its cohort:

* An entry `TierQuota(nominal, borrowing_limit)` guarantees `nominal` GPUs to the tenant
  for the tier and caps what it holds at `nominal + borrowing_limit` (no cap when the
  limit is None, as Kueue's unset `borrowingLimit`). A bare number in the config is the
  nominal alone. An empty mapping means quotas are off: every job is allowed.
* **Reserved** GPUs are the unused part of every *other* entry's guarantee,
  `sum(max(0, nominal - used))`; the **unreserved** headroom is what is free right now
  (on the pools the job could use) less that, never below zero.
* A job is wholly in quota or wholly beyond it (it cannot be half preempted). For a job of
  `gpus` GPUs by a tenant holding `used` of the tier:
  1. over its own cap (`used + gpus > nominal + borrowing_limit`): refused, `QuotaCapReached`;
  2. within its nominal: allowed, not borrowed;
  3. beyond its nominal (a tenant or tier without an entry has nominal 0 and no cap):
     - **P1** is allowed wherever there is room: P1 already preempts lower tiers, and a
       P1 job must never wait on a fleet with room because of someone else's unused
       guarantee;
     - **preemptible** work may borrow any idle GPU, others' unused guarantees included,
       when `borrowing` is on; it is marked `borrowed`, and an owner reclaims it;
     - **non-preemptible** work can never be given back, so it takes only unreserved
       headroom; otherwise it waits, `QuotaReserved`;
     - neither preempts anything to run beyond its nominal: with fewer GPUs free than it
       needs it waits, `NoCapacity`.
     Preemptible work beyond its nominal is `borrowed` whether or not it ate into a
     guarantee: which GPUs are reserved shifts as jobs end, so all of it stays reclaimable.
* An owner reclaims (`reclaimable`) when the job fits within what is left of its nominal
  and some other tenant holds borrowed work: Kueue's `reclaimWithinCohort: Any`. The
  engine then calls `choose_victims(owner_tenant=...)`, which may pick borrowed
  preemptible work of any tier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from broker.domain.conditions import Reason
from broker.domain.enums import Tier
from broker.domain.fleet import MILLI_PER_GPU
from broker.domain.work import RunningWork

_EPS = 1e-9  # GPUs are counted as floats (fractions and MIG slices); absorb rounding


@dataclass(frozen=True, slots=True, kw_only=True)
class TierQuota:
    """One tenant's entry for one tier: guaranteed GPUs, and how many more it may hold."""

    nominal: float = 0.0
    borrowing_limit: float | None = None  # None: no cap beyond the nominal

    @property
    def cap(self) -> float | None:
        return None if self.borrowing_limit is None else self.nominal + self.borrowing_limit


# A bare number is an entry's nominal (the config's original shape).
Quotas = Mapping[str, Mapping[Tier, "TierQuota | float"]]

NO_ENTRY = TierQuota()


def entry(quotas: Quotas, *, tenant: str, tier: Tier) -> TierQuota:
    """The tenant's entry for the tier; no guarantee and no cap when none is configured."""
    got = quotas.get(tenant, {}).get(tier)
    if got is None:
        return NO_ENTRY
    return got if isinstance(got, TierQuota) else TierQuota(nominal=float(got))


def quota_of(quotas: Quotas, *, tenant: str, tier: Tier) -> float:
    """The tenant's guaranteed GPUs for the tier; 0 when none is configured."""
    return entry(quotas, tenant=tenant, tier=tier).nominal


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


def reserved_for_others(quotas: Quotas, ledger: QuotaLedger, *, tenant: str, tier: Tier) -> float:
    """GPUs the other entries are guaranteed and do not use now."""
    total = 0.0
    for t, by_tier in quotas.items():
        for q_tier in by_tier:
            if (t, q_tier) == (tenant, tier):
                continue
            nominal = entry(quotas, tenant=t, tier=q_tier).nominal
            total += max(0.0, nominal - ledger.used_gpus(tenant=t, tier=q_tier))
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaDecision:
    allowed: bool
    borrowed: bool  # beyond the nominal and preemptible: reclaimable by quota owners
    reason: str
    code: Reason | None = None  # why it is refused (None when allowed)
    # the figures the decision was made on (the explain endpoint shows them)
    nominal: float = 0.0
    cap: float | None = None
    used: float = 0.0
    idle: float = 0.0
    reserved: float = 0.0

    @property
    def unreserved(self) -> float:
        return max(0.0, self.idle - self.reserved)


def check(
    *,
    tenant: str,
    tier: Tier,
    gpus: float,
    preemptible: bool,
    ledger: QuotaLedger,
    quotas: Quotas,
    idle_gpus: float,
    borrowing: bool,
) -> QuotaDecision:
    """Whether a job of `gpus` GPUs may start now, and whether it is borrowed work.

    `idle_gpus`: free GPUs right now on the pools the job could use."""
    if not quotas:
        return QuotaDecision(allowed=True, borrowed=False, reason="no quotas configured")
    q = entry(quotas, tenant=tenant, tier=tier)
    used = ledger.used_gpus(tenant=tenant, tier=tier)
    reserved = reserved_for_others(quotas, ledger, tenant=tenant, tier=tier)

    def decide(
        allowed: bool, borrowed: bool, reason: str, code: Reason | None = None
    ) -> QuotaDecision:
        return QuotaDecision(
            allowed=allowed,
            borrowed=borrowed,
            reason=reason,
            code=code,
            nominal=q.nominal,
            cap=q.cap,
            used=used,
            idle=idle_gpus,
            reserved=reserved,
        )

    where = f"tenant {tenant} holds {used:g} GPUs of {tier}"
    if q is NO_ENTRY:
        where += " (no quota entry: it draws from unreserved capacity)"
    else:
        cap = "no cap" if q.cap is None else f"cap {q.cap:g}"
        where += f" (nominal {q.nominal:g}, {cap})"
    if q.cap is not None and used + gpus > q.cap + _EPS:
        return decide(
            False,
            False,
            f"{where}; {gpus:g} more would exceed its cap of {q.cap:g}",
            Reason.QUOTA_CAP_REACHED,
        )
    if used + gpus <= q.nominal + _EPS:
        return decide(True, False, f"{where}; {gpus:g} more fit in quota")
    if tier is Tier.P1:
        return decide(True, preemptible, f"{where}; P1 beyond its nominal takes any free GPU")
    if gpus > idle_gpus + _EPS:
        # beyond its nominal, work runs only on GPUs that are free: it never preempts
        # (reclaiming is for work within its nominal; `reclaimable`)
        return decide(
            False,
            False,
            f"{where}; {gpus:g} more are beyond its nominal, and too few GPUs are free now",
            Reason.NO_CAPACITY,
        )
    if preemptible and borrowing:
        return decide(
            True, True, f"{where}; borrowing {gpus:g} idle GPUs, reclaimable by quota owners"
        )
    unreserved = max(0.0, idle_gpus - reserved)
    if gpus <= unreserved + _EPS:
        return decide(True, preemptible, f"{where}; {gpus:g} more fit in unreserved GPUs")
    why = "borrowing is disabled" if preemptible else "only preemptible work may borrow"
    return decide(
        False,
        False,
        f"{where}; {gpus:g} more would use GPUs other tenants' unused quotas guarantee, and {why}",
        Reason.QUOTA_RESERVED,
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

    Without `gpus`, the owner must be strictly below its nominal for `tier`; with it, the
    job of that size must fit in what is left of the nominal (reclaiming for a job that
    would itself exceed it would only turn it into borrowed work).
    """
    quota = quota_of(quotas, tenant=owner_tenant, tier=tier)
    used = ledger.used_gpus(tenant=owner_tenant, tier=tier)
    under = used < quota - _EPS if gpus is None else used + gpus <= quota + _EPS
    return under and bool(ledger.borrowers(excluding=owner_tenant))
