"""Per-tenant, per-tier GPU quotas: in quota, borrowed, refused, and reclaim."""

from __future__ import annotations

from broker.domain.conditions import Reason
from broker.domain.enums import Tier
from broker.domain.policy.quotas import (
    QuotaDecision,
    QuotaLedger,
    Quotas,
    TierQuota,
    check,
    entry,
    reclaimable,
    reserved_for_others,
)
from tests.domain.policy.builders import work

QUOTAS: Quotas = {"a": {Tier.P2: 16.0, Tier.P1: 4.0}, "b": {Tier.P2: 8.0}}


def ledger_with(a_p2: float = 0.0, *, b_borrowed: float = 0.0) -> QuotaLedger:
    running = []
    if a_p2:
        running.append(work("a-p2", gpus=a_p2, tier=Tier.P2, tenant="a"))
    if b_borrowed:
        running.append(work("b-lent", gpus=b_borrowed, tier=Tier.P3, tenant="b", borrowed=True))
    return QuotaLedger.from_running(running)


def decide(
    gpus: float,
    ledger: QuotaLedger,
    *,
    tenant: str = "a",
    idle: float = 8.0,
    borrowing: bool,
    preemptible: bool = True,
    tier: Tier = Tier.P2,
    quotas: Quotas = QUOTAS,
) -> QuotaDecision:
    return check(
        tenant=tenant,
        tier=tier,
        gpus=gpus,
        preemptible=preemptible,
        ledger=ledger,
        quotas=quotas,
        idle_gpus=idle,
        borrowing=borrowing,
    )


def test_ledger_counts_gpus_per_tenant_and_tier_and_what_is_borrowed() -> None:
    ledger = QuotaLedger.from_running(
        [
            work("g", nodes=(0, 1), gpus=4, tier=Tier.P2, tenant="a"),
            work("f", gpus=0.5, tier=Tier.P2, tenant="a", borrowed=True),
            work("x", gpus=2, tier=Tier.P3, tenant="a"),
        ]
    )
    assert ledger.used_gpus(tenant="a", tier=Tier.P2) == 8.5
    assert ledger.borrowed_gpus(tenant="a", tier=Tier.P2) == 0.5
    assert ledger.used_gpus(tenant="a", tier=Tier.P3) == 2.0
    assert ledger.used_gpus(tenant="b", tier=Tier.P2) == 0.0
    assert ledger.borrowers() == ("a",)
    assert ledger.borrowers(excluding="a") == ()


def test_ledger_add_returns_a_new_ledger() -> None:
    empty = QuotaLedger()
    more = empty.add(tenant="a", tier=Tier.P2, gpus=2, borrowed=True)
    assert empty.used_gpus(tenant="a", tier=Tier.P2) == 0.0
    assert more.used_gpus(tenant="a", tier=Tier.P2) == 2.0
    assert more.borrowers() == ("a",)


def test_an_entry_is_a_number_or_a_nominal_with_a_borrowing_limit() -> None:
    assert entry(QUOTAS, tenant="a", tier=Tier.P2) == TierQuota(nominal=16.0)
    assert entry(QUOTAS, tenant="a", tier=Tier.P3) == TierQuota()  # no entry: nothing, no cap
    capped = {"a": {Tier.P2: TierQuota(nominal=4, borrowing_limit=2)}}
    assert entry(capped, tenant="a", tier=Tier.P2).cap == 6


def test_within_quota_is_allowed_and_not_borrowed() -> None:
    decision = decide(4, ledger_with(10), borrowing=False)
    assert decision.allowed
    assert not decision.borrowed
    exactly_full = decide(6, ledger_with(10), borrowing=False)
    assert exactly_full.allowed
    assert not exactly_full.borrowed


def test_over_quota_preemptible_work_borrows_idle_gpus() -> None:
    decision = decide(2, ledger_with(16), idle=4, borrowing=True)
    assert decision.allowed and decision.borrowed and decision.code is None
    assert decision.reason == (
        "tenant a holds 16 GPUs of P2 (nominal 16, no cap); borrowing 2 idle GPUs, "
        "reclaimable by quota owners"
    )
    # the figures explain shows: b's 8 unused P2 GPUs and a's unused P1 4 are reserved
    assert (decision.nominal, decision.used, decision.idle, decision.reserved) == (16, 16, 4, 12)


def test_a_job_straddling_the_quota_is_wholly_borrowed() -> None:
    decision = decide(4, ledger_with(14), borrowing=True)
    assert decision.allowed
    assert decision.borrowed


def test_non_preemptible_work_beyond_its_nominal_takes_only_unreserved_gpus() -> None:
    # 20 free, 12 of them other entries' unused guarantees (b P2 8, a P1 4): 8 unreserved
    fits = decide(8, ledger_with(16), idle=20, borrowing=True, preemptible=False)
    assert fits.allowed and not fits.borrowed  # it could not be given back: not borrowed
    refused = decide(9, ledger_with(16), idle=20, borrowing=True, preemptible=False)
    assert not refused.allowed
    assert refused.code is Reason.QUOTA_RESERVED
    assert "only preemptible work may borrow" in refused.reason


def test_without_borrowing_preemptible_work_takes_only_unreserved_gpus() -> None:
    refused = decide(2, ledger_with(16), idle=8, borrowing=False)
    assert not refused.allowed
    assert refused.code is Reason.QUOTA_RESERVED
    assert "borrowing is disabled" in refused.reason
    fits = decide(2, ledger_with(16), idle=14, borrowing=False)
    assert fits.allowed and fits.borrowed  # preemptible beyond nominal: reclaimable


def test_a_tenant_without_an_entry_draws_from_unreserved_capacity() -> None:
    # c has no entry: a's and b's unused guarantees (16 + 4 + 8) are reserved
    assert decide(1, QuotaLedger(), tenant="c", idle=29, borrowing=False).allowed
    refused = decide(2, QuotaLedger(), tenant="c", idle=29, borrowing=False)
    assert not refused.allowed
    assert refused.reason.startswith(
        "tenant c holds 0 GPUs of P2 (no quota entry: it draws from unreserved capacity)"
    )
    # preemptible, with borrowing: any idle GPU, reclaimable
    assert decide(8, QuotaLedger(), tenant="c", idle=8, borrowing=True).borrowed


def test_p1_is_never_refused_for_others_guarantees() -> None:
    """The bug of issue 15: quotas for other tenants only, a P1 job on an idle fleet."""
    others = {"b": {Tier.P2: 8.0}}
    d = decide(
        1,
        QuotaLedger(),
        tenant="c",
        idle=8,
        borrowing=True,
        preemptible=False,
        tier=Tier.P1,
        quotas=others,
    )
    assert d.allowed and not d.borrowed and d.code is None
    # even when every free GPU is another tenant's unused guarantee
    assert decide(
        1,
        QuotaLedger(),
        tenant="c",
        idle=1,
        borrowing=False,
        preemptible=False,
        tier=Tier.P1,
        quotas=others,
    ).allowed


def test_the_cap_binds_every_tier_p1_included() -> None:
    capped = {"a": {Tier.P1: TierQuota(nominal=2, borrowing_limit=1)}}
    held = QuotaLedger().add(tenant="a", tier=Tier.P1, gpus=2, borrowed=False)
    assert decide(1, held, tier=Tier.P1, borrowing=True, preemptible=False, quotas=capped).allowed
    over = decide(2, held, tier=Tier.P1, borrowing=True, preemptible=False, quotas=capped)
    assert not over.allowed
    assert over.code is Reason.QUOTA_CAP_REACHED
    assert over.reason == (
        "tenant a holds 2 GPUs of P1 (nominal 2, cap 3); 2 more would exceed its cap of 3"
    )
    zero_limit = {"a": {Tier.P2: TierQuota(nominal=16, borrowing_limit=0)}}
    assert not decide(1, ledger_with(16), borrowing=True, quotas=zero_limit).allowed


def test_no_quotas_configured_allows_everything() -> None:
    decision = check(
        tenant="a",
        tier=Tier.P1,
        gpus=100,
        preemptible=False,
        ledger=QuotaLedger(),
        quotas={},
        idle_gpus=0,
        borrowing=False,
    )
    assert decision == QuotaDecision(allowed=True, borrowed=False, reason="no quotas configured")


def test_reserved_counts_only_the_unused_part_of_other_entries() -> None:
    ledger = ledger_with(10).add(tenant="b", tier=Tier.P2, gpus=3, borrowed=False)
    # for c: a P2 16-10, a P1 4, b P2 8-3
    assert reserved_for_others(QUOTAS, ledger, tenant="c", tier=Tier.P2) == 15
    # for a P2: its own entry does not count
    assert reserved_for_others(QUOTAS, ledger, tenant="a", tier=Tier.P2) == 9


def test_owner_under_quota_may_reclaim_from_another_tenants_borrowed_work() -> None:
    ledger = ledger_with(10, b_borrowed=4)
    assert reclaimable(owner_tenant="a", ledger=ledger, quotas=QUOTAS, tier=Tier.P2)
    assert reclaimable(owner_tenant="a", ledger=ledger, quotas=QUOTAS, tier=Tier.P2, gpus=6)
    # a 7-GPU job would take it past 16: reclaiming would only make it a borrower itself
    assert not reclaimable(owner_tenant="a", ledger=ledger, quotas=QUOTAS, tier=Tier.P2, gpus=7)


def test_no_reclaim_at_quota_without_quota_or_without_borrowers() -> None:
    assert not reclaimable(
        owner_tenant="a", ledger=ledger_with(16, b_borrowed=4), quotas=QUOTAS, tier=Tier.P2
    )
    assert not reclaimable(
        owner_tenant="a", ledger=ledger_with(0, b_borrowed=4), quotas=QUOTAS, tier=Tier.P3
    )
    assert not reclaimable(owner_tenant="a", ledger=ledger_with(2), quotas=QUOTAS, tier=Tier.P2)
    own = QuotaLedger().add(tenant="a", tier=Tier.P3, gpus=4, borrowed=True)
    assert not reclaimable(owner_tenant="a", ledger=own, quotas=QUOTAS, tier=Tier.P2)
