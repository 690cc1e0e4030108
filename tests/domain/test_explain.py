"""`explain_job`: a waiting job as a pass would see it now, and the conditions a pass keeps."""

from __future__ import annotations

from dataclasses import replace

from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.engine import Engine, Wait
from broker.domain.enums import Tier
from broker.domain.explain import explain_job
from broker.domain.latency import LatencyMatrix
from broker.domain.policy.quotas import TierQuota
from broker.scheduling.waiting import changed_conditions
from tests.domain.test_engine import BASE, FLAT, NOW, job, pool, site, work


def explain(settings, target, *, queue=(), running=(), pools=None):  # type: ignore[no-untyped-def]
    return explain_job(
        Engine(settings),
        target,
        queue=list(queue),
        pools=pools if pools is not None else [pool(running=list(running))],
        running=list(running),
        sites=[site()],
        latency=LatencyMatrix({}),
        carbon=FLAT,
        now=NOW,
    )


def test_a_job_behind_others_of_its_tier_waits_for_what_they_take() -> None:
    ahead = [
        job("older-1", created=NOW.replace(hour=10)),
        job("older-2", created=NOW.replace(hour=11)),
    ]
    mine = job("mine")
    ex = explain(BASE, mine, queue=[*ahead, mine])
    assert (ex.standing.position, ex.standing.queue_length, ex.standing.ahead_same_tier) == (
        3,
        3,
        2,
    )
    assert ex.outcome == "wait"  # the two ahead take both nodes
    assert ex.reason is Reason.NO_CAPACITY
    assert ex.quota is None  # quotas off
    assert ex.preemption == "only P1 (or a quota owner taking back borrowed GPUs) preempts"


def test_a_p1_job_names_the_work_it_would_preempt_and_its_cost() -> None:
    running = [work("p3-a", nodes=(0,), tenant="b"), work("p3-b", nodes=(1,), tenant="b")]
    ex = explain(BASE, job("p1", tier=Tier.P1), running=running)
    assert ex.outcome == "place"
    assert [v.job_id for v in ex.victims] == ["p3-a"]
    assert ex.victims[0].tier is Tier.P3 and ex.victims[0].gpu_seconds_lost == 8 * 3600
    assert ex.deferral == "P1 is never deferred"


def test_the_quota_check_comes_with_its_figures() -> None:
    capped = replace(BASE, quotas={"t": {Tier.P2: TierQuota(nominal=8, borrowing_limit=0)}})
    running = [work("mine-running", nodes=(0,), tier=Tier.P2, tenant="t")]
    ex = explain(capped, job("more"), running=running)
    assert ex.outcome == "wait" and ex.reason is Reason.QUOTA_CAP_REACHED
    assert ex.quota is not None
    assert (ex.quota.nominal, ex.quota.cap, ex.quota.used, ex.quota.idle) == (8, 8, 8, 8)
    assert ex.preemption.startswith("not tried")


def test_a_pass_writes_a_condition_only_when_it_changes() -> None:
    j = job("j")
    wait = Wait(job=j, reason="no pool can take it now (capacity)", code=Reason.NO_CAPACITY)
    first = changed_conditions([wait], now=NOW)
    assert first == {
        "j": Condition(
            type=ConditionType.WAITING, reason=Reason.NO_CAPACITY, message=wait.reason, since=NOW
        )
    }
    stored = replace(j, condition=first["j"])
    later = NOW.replace(hour=13)
    assert changed_conditions([replace(wait, job=stored)], now=later) == {}
    # a fresher message keeps `since`; a new reason moves it
    fresher = changed_conditions([replace(wait, job=stored, reason="other text")], now=later)
    assert fresher["j"].since == NOW
    quota = changed_conditions([replace(wait, job=stored, code=Reason.QUOTA_RESERVED)], now=later)
    assert quota["j"].since == later
    # a preempted job that now waits for capacity keeps saying it was preempted
    preempted = replace(
        j,
        condition=Condition(
            type=ConditionType.PREEMPTED,
            reason=Reason.PREEMPTED_BY_HIGHER_TIER,
            message="preempted for a P1 job",
            since=NOW,
        ),
    )
    assert changed_conditions([replace(wait, job=preempted)], now=later) == {}
