"""Dominant-resource fair share and the aged queue order, with numbers checkable by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from broker.domain.policy.fairness import (
    capacity_from_pools,
    dominant_shares,
    effective_priority,
    order_queue,
    usage_from_running,
)
from tests.domain.policy.builders import NOW, pool, work


def job(job_id: str, *, tenant: str, tier: Tier = Tier.P2, hours_ago: float = 0.0) -> Job:
    created = NOW - timedelta(hours=hours_ago)
    spec = JobSpec(
        name=job_id,
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=1),
        workload=Workload(image="img"),
        estimated_duration_s=3600,
    )
    return Job(
        id=job_id,
        tenant=tenant,
        spec=spec,
        state=JobState.PENDING,
        created_at=created,
        updated_at=created,
    )


def test_dominant_share_is_the_largest_fraction_over_resources() -> None:
    capacity = {"gpu:H100": 16.0, "gpu:L4": 32.0}
    usage = {
        "vision": {"gpu:H100": 4.0, "gpu:L4": 16.0},  # 0.25 and 0.5 -> 0.5
        "nlp": {"gpu:H100": 12.0, "gpu:L4": 8.0},  # 0.75 and 0.25 -> 0.75
    }
    assert dominant_shares(usage=usage, capacity=capacity) == {"vision": 0.5, "nlp": 0.75}


def test_resources_without_capacity_are_ignored_and_idle_tenants_have_share_zero() -> None:
    capacity = {"gpu:H100": 8.0, "gpu:A10": 0.0}
    usage = {"a": {"gpu:A10": 3.0, "gpu:T4": 1.0, "gpu:H100": 2.0}, "idle": {}}
    assert dominant_shares(usage=usage, capacity=capacity) == {"a": 0.25, "idle": 0.0}


def test_usage_from_running_counts_gpus_per_model_and_optional_cpu_memory() -> None:
    running = [
        work("g", nodes=(0, 1), gpus=4, tenant="a"),  # a gang: 8 GPUs
        work("f", gpus=0.5, tenant="a", model="L4"),
        work("b1", gpus=2, tenant="b"),
    ]
    assert usage_from_running(running) == {
        "a": {"gpu:H100": 8.0, "gpu:L4": 0.5},
        "b": {"gpu:H100": 2.0},
    }
    with_cpu = usage_from_running(running, cpu_by_job={"g": 32.0, "b1": 4.0})
    assert with_cpu["a"] == {"gpu:H100": 8.0, "cpu": 32.0, "gpu:L4": 0.5}
    with_mem = usage_from_running(running, memory_gb_by_job={"f": 16.0})
    assert with_mem["a"]["memory_gb"] == 16.0
    assert "memory_gb" not in with_mem["b"]


def test_capacity_from_pools_sums_gpus_per_model_and_node_resources() -> None:
    pools = [
        pool(pool_id="h1", nodes=2, per_node=8),
        pool(pool_id="h2", nodes=1, per_node=4),
        pool(pool_id="l", nodes=3, per_node=1, model="L4"),
    ]
    capacity = capacity_from_pools(pools)
    assert capacity["gpu:H100"] == 20.0
    assert capacity["gpu:L4"] == 3.0
    assert capacity["cpu"] == 6 * 96.0
    assert capacity["memory_gb"] == 6 * 1024.0


def test_tier_always_comes_first() -> None:
    heavy_p1 = job("heavy-p1", tenant="heavy", tier=Tier.P1)
    light_p3 = job("light-p3", tenant="light", tier=Tier.P3, hours_ago=1000)
    light_p2 = job("light-p2", tenant="light", tier=Tier.P2, hours_ago=1000)
    ordered = order_queue(
        jobs=[light_p3, light_p2, heavy_p1],
        shares={"heavy": 1.0, "light": 0.0},
        now=NOW,
        aging_per_hour=0.5,
    )
    assert [j.id for j in ordered] == ["heavy-p1", "light-p2", "light-p3"]


def test_lower_share_goes_first_until_aging_overtakes_it() -> None:
    shares = {"heavy": 0.8, "light": 0.2}
    light = job("light", tenant="light", hours_ago=0)

    def first(heavy_waited_h: float) -> str:
        heavy = job("heavy", tenant="heavy", hours_ago=heavy_waited_h)
        ordered = order_queue(jobs=[heavy, light], shares=shares, now=NOW, aging_per_hour=0.1)
        return ordered[0].id

    # effective = share - 0.1 × hours: heavy after 5 h is 0.3 > 0.2, after 7 h 0.1 < 0.2
    assert first(5) == "light"
    assert first(7) == "heavy"
    heavy = job("heavy", tenant="heavy", hours_ago=7)
    assert effective_priority(heavy, shares=shares, now=NOW, aging_per_hour=0.1) == pytest.approx(
        0.1
    )


def test_without_aging_a_heavy_tenant_waits_however_long() -> None:
    heavy = job("heavy", tenant="heavy", hours_ago=10_000)
    light = job("light", tenant="light")
    ordered = order_queue(jobs=[heavy, light], shares={"heavy": 0.8}, now=NOW, aging_per_hour=0.0)
    assert [j.id for j in ordered] == ["light", "heavy"]  # a missing tenant has share 0


def test_ties_go_to_the_oldest_then_the_id() -> None:
    jobs = [
        job("c", tenant="t", hours_ago=1),
        job("b", tenant="t", hours_ago=2),
        job("a", tenant="t", hours_ago=1),
    ]
    ordered = order_queue(jobs=jobs, shares={"t": 0.5}, now=NOW, aging_per_hour=0.0)
    assert [j.id for j in ordered] == ["b", "a", "c"]


def test_a_job_created_in_the_future_gets_no_negative_aging() -> None:
    early = job("early", tenant="t", hours_ago=-2)
    assert effective_priority(early, shares={"t": 0.3}, now=NOW, aging_per_hour=1.0) == 0.3


def _with_deadline(j: Job, *, hours_from_now: float, duration_h: float = 1.0) -> Job:
    from dataclasses import replace

    spec = replace(
        j.spec,
        deadline=NOW + timedelta(hours=hours_from_now),
        estimated_duration_s=int(duration_h * 3600),
    )
    return replace(j, spec=spec)


def test_urgent_deadlines_go_before_fair_share_least_slack_first() -> None:
    light = job("light", tenant="idle")  # share 0: first by fair share
    heavy_late = _with_deadline(job("heavy-late", tenant="big"), hours_from_now=3)  # slack 2 h
    heavy_later = _with_deadline(job("heavy-later", tenant="big"), hours_from_now=5)  # slack 4 h
    relaxed = _with_deadline(job("relaxed", tenant="big"), hours_from_now=30)  # slack 29 h
    p1 = job("p1", tenant="big", tier=Tier.P1)
    shares = {"big": 0.9, "idle": 0.0}
    ordered = order_queue(
        jobs=[relaxed, heavy_later, light, p1, heavy_late],
        shares=shares,
        now=NOW,
        aging_per_hour=0.0,
        urgent_slack_s=6 * 3600,
    )
    assert [j.id for j in ordered] == ["p1", "heavy-late", "heavy-later", "light", "relaxed"]
    # without an urgency window, fair share alone decides within the tier
    plain = order_queue(
        jobs=[relaxed, heavy_later, light, heavy_late], shares=shares, now=NOW, aging_per_hour=0.0
    )
    assert plain[0].id == "light"
