"""Per-tenant, per-tier GPU quotas: in quota, borrowed, refused, and reclaim."""

from __future__ import annotations

from broker.domain.enums import Tier
from broker.domain.policy.quotas import QuotaDecision, QuotaLedger, check, reclaimable
from tests.domain.policy.builders import work

QUOTAS = {"a": {Tier.P2: 16.0, Tier.P1: 4.0}, "b": {Tier.P2: 8.0}}


def ledger_with(a_p2: float = 0.0, *, b_borrowed: float = 0.0) -> QuotaLedger:
    running = []
    if a_p2:
        running.append(work("a-p2", gpus=a_p2, tier=Tier.P2, tenant="a"))
    if b_borrowed:
        running.append(work("b-lent", gpus=b_borrowed, tier=Tier.P3, tenant="b", borrowed=True))
    return QuotaLedger.from_running(running)


def decide(
    gpus: float, ledger: QuotaLedger, *, tenant: str = "a", idle: float = 8.0, borrowing: bool
) -> QuotaDecision:
    return check(
        tenant=tenant,
        tier=Tier.P2,
        gpus=gpus,
        ledger=ledger,
        quotas=QUOTAS,
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


def test_within_quota_is_allowed_and_not_borrowed() -> None:
    decision = decide(4, ledger_with(10), borrowing=False)
    assert decision.allowed
    assert not decision.borrowed
    exactly_full = decide(6, ledger_with(10), borrowing=False)
    assert exactly_full.allowed
    assert not exactly_full.borrowed


def test_over_quota_borrows_idle_gpus_when_enabled() -> None:
    decision = decide(2, ledger_with(16), idle=4, borrowing=True)
    assert decision == QuotaDecision(
        allowed=True,
        borrowed=True,
        reason="tenant a at 16/16 GPUs of its P2 quota; borrowing 2 idle GPUs, "
        "reclaimable by quota owners",
    )


def test_a_job_straddling_the_quota_is_wholly_borrowed() -> None:
    decision = decide(4, ledger_with(14), borrowing=True)
    assert decision.allowed
    assert decision.borrowed


def test_over_quota_is_refused_without_borrowing() -> None:
    decision = decide(2, ledger_with(16), borrowing=False)
    assert not decision.allowed
    assert decision.reason.startswith("tenant a at 16/16 GPUs of its P2 quota")
    assert "borrowing is disabled" in decision.reason


def test_over_quota_is_refused_when_too_few_gpus_are_idle() -> None:
    decision = decide(4, ledger_with(16), idle=3, borrowing=True)
    assert not decision.allowed
    assert "only 3 idle" in decision.reason


def test_tenant_without_quota_may_only_borrow() -> None:
    assert decide(1, QuotaLedger(), tenant="c", borrowing=True).borrowed
    refused = decide(1, QuotaLedger(), tenant="c", borrowing=False)
    assert not refused.allowed
    assert refused.reason.startswith("tenant c at 0/0 GPUs of its P2 quota")


def test_no_quotas_configured_allows_everything() -> None:
    decision = check(
        tenant="a",
        tier=Tier.P1,
        gpus=100,
        ledger=QuotaLedger(),
        quotas={},
        idle_gpus=0,
        borrowing=False,
    )
    assert decision == QuotaDecision(allowed=True, borrowed=False, reason="no quotas configured")


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
