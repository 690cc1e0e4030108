"""The scheduling engine's pass, by hand: preemption, deferral, weights, fair share, quotas.

Every fleet here is built by hand and every expectation worked out on paper; the engine is
pure, so nothing here does I/O. Times are fixed (`NOW`), carbon comes from `Oracle`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.conditions import Reason
from broker.domain.engine import (
    Decision,
    Defer,
    Engine,
    EngineSettings,
    Hourly,
    Place,
    Wait,
    mean_intensity,
)
from broker.domain.enums import Health, JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, NodeUse, Site
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.policy.quotas import TierQuota
from broker.domain.work import RunningWork, lay_out

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
BALANCED = Weights(cost=0.5, latency=0.0, carbon=0.5)
CARBON_ONLY = Weights(cost=0.0, latency=0.0, carbon=1.0)
BASE = EngineSettings(weights={Tier.P1: BALANCED, Tier.P2: BALANCED, Tier.P3: BALANCED})


class Oracle:
    """Hourly intensity per zone from plain lists, the first value being the hour of NOW."""

    def __init__(self, series: Mapping[str, Sequence[float]]) -> None:
        self._series = {
            z: [(NOW + k * H, float(v)) for k, v in enumerate(vs)] for z, vs in series.items()
        }

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        lo = start.replace(minute=0, second=0, microsecond=0)
        return [(t, v) for t, v in self._series.get(zone, []) if lo <= t < end]


def flat(value: float, *, hours: int = 48) -> list[float]:
    return [value] * hours


def with_hours(base: float, changes: Mapping[int, float], *, hours: int = 48) -> list[float]:
    """`base` every hour except the hour offsets in `changes`."""
    return [changes.get(k, base) for k in range(hours)]


FLAT = Oracle({"Z": flat(300.0)})


def site(name: str = "s", *, zone: str = "Z", health: Health = Health.HEALTHY) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region=name,
        location=f"sim:{name}",
        grid_zone=zone,
        private=True,
        pue=1.2,
        health=health,
    )


def work(
    job_id: str,
    *,
    pool_id: str = "s/H100",
    nodes: tuple[int, ...] = (0,),
    gpus: int = 8,
    tier: Tier = Tier.P3,
    preemptible: bool | None = None,
    started: datetime | None = NOW - H,
    tenant: str = "t",
    borrowed: bool = False,
    model: str = "H100",
) -> RunningWork:
    return RunningWork(
        job_id=job_id,
        tenant=tenant,
        tier=tier,
        preemptible=tier is Tier.P3 if preemptible is None else preemptible,
        pool_id=pool_id,
        node_indices=nodes,
        milli_per_node=gpus * 1000,
        gpu_model=model,
        started_at=started,
        placed_at=started or NOW,
        borrowed=borrowed,
    )


def pool(
    *,
    site_name: str = "s",
    model: str = "H100",
    nodes: int = 2,
    per_node: int = 8,
    price: float = 2.0,
    running: Sequence[RunningWork] = (),
) -> GpuPool:
    """A pool `<site>/<model>` whose ledger holds exactly the `running` work placed on it;
    the GPUs each work got are kept in `LAID_OUT`, which `plan` hands the engine (as the
    store names each placement's GPUs)."""
    pool_id = f"{site_name}/{model}"
    empty = GpuPool(
        id=pool_id,
        site=site_name,
        gpu_model=model,
        gpu_memory_gb=80 if model == "H100" else 16,
        gpus_per_node=per_node,
        nodes=nodes,
        price_on_demand=price,
    )
    pools, works = lay_out([empty], [w for w in running if w.pool_id == pool_id])
    LAID_OUT.update({(pool_id, w.job_id): w for w in works})
    return pools[0]


LAID_OUT: dict[tuple[str, str], RunningWork] = {}


def job(
    job_id: str,
    *,
    tier: Tier = Tier.P2,
    gpus: int = 8,
    tenant: str = "t",
    created: datetime = NOW,
    deadline: datetime | None = None,
    duration_s: int = 3600,
    preemptible: bool | None = None,
    objective: Weights | None = None,
    models: tuple[str, ...] = ("H100",),
) -> Job:
    spec = JobSpec(
        name=job_id,
        tier=tier,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=gpus, gpu_models=models),
        workload=Workload(image="i"),
        estimated_duration_s=duration_s,
        deadline=deadline,
        preemptible=preemptible,
        objective=objective,
    )
    return Job(
        id=job_id,
        tenant=tenant,
        spec=spec,
        state=JobState.PENDING,
        created_at=created,
        updated_at=created,
    )


def plan(
    settings: EngineSettings,
    *,
    queue: Sequence[Job],
    pools: Sequence[GpuPool],
    running: Sequence[RunningWork] = (),
    sites: Sequence[Site] = (site(),),
    carbon: Oracle = FLAT,
    now: datetime = NOW,
    waiting: Sequence[JobSpec] | None = None,
) -> list[Decision]:
    return Engine(settings).plan(
        waiting=waiting,
        queue=queue,
        pools=pools,
        running=[LAID_OUT.get((w.pool_id, w.job_id), w) for w in running],
        sites=sites,
        latency=LatencyMatrix({}),
        carbon=carbon,
        now=now,
    )


def only(decisions: Sequence[Decision]) -> Decision:
    assert len(decisions) == 1, decisions
    return decisions[0]


# ---- (1) preemption ---------------------------------------------------------------------


def test_p1_preempts_the_fewest_p3_jobs_and_takes_the_node_they_free() -> None:
    # node 0: one P3 job of 8 GPUs (2 h of work to lose: 57,600 GPU-s);
    # node 1: two P3 jobs of 4 GPUs (1 h each: 28,800 GPU-s together).
    # Fewest victims comes before least work lost, so the single big job goes.
    running = [
        work("big", nodes=(0,), gpus=8, started=NOW - 2 * H),
        work("half-a", nodes=(1,), gpus=4),
        work("half-b", nodes=(1,), gpus=4),
    ]
    p = pool(running=running)
    d = only(plan(BASE, queue=[job("p1", tier=Tier.P1)], pools=[p], running=running))

    assert isinstance(d, Place)
    assert d.victims is not None
    assert d.victims.job_ids == ("big",)
    assert d.victims.nodes == (0,)
    assert d.victims.gpu_seconds_lost == pytest.approx(8 * 7200)
    assert d.candidate.pool_id == "s/H100"
    assert d.candidate.nodes == (0,)
    assert not d.borrowed
    # node 0 is held by the victim alone, so it is empty once the victim leaves
    left = sum(w.milli_per_node for w in running if 0 in w.node_indices and w.job_id != "big")
    assert left == 0


def test_two_p1_jobs_in_one_pass_do_not_share_a_victim() -> None:
    running = [
        work("big", nodes=(0,), gpus=8, started=NOW - 2 * H),
        work("half-a", nodes=(1,), gpus=4),
        work("half-b", nodes=(1,), gpus=4),
    ]
    first = job("p1-first", tier=Tier.P1, created=NOW - 2 * timedelta(minutes=1))
    second = job("p1-second", tier=Tier.P1, created=NOW - timedelta(minutes=1))
    a, b = plan(BASE, queue=[second, first], pools=[pool(running=running)], running=running)

    assert isinstance(a, Place) and isinstance(b, Place)
    assert a.job.id == "p1-first"
    assert a.victims is not None and a.victims.job_ids == ("big",)
    assert a.candidate.nodes == (0,)
    assert b.victims is not None and b.victims.job_ids == ("half-a", "half-b")
    assert b.candidate.nodes == (1,)


def test_preemption_prefers_the_victim_that_loses_least_work() -> None:
    running = [
        work("old", nodes=(0,), started=NOW - 3 * H),
        work("young", nodes=(1,), started=NOW - timedelta(minutes=10)),
    ]
    d = only(
        plan(BASE, queue=[job("p1", tier=Tier.P1)], pools=[pool(running=running)], running=running)
    )
    assert isinstance(d, Place)
    assert d.victims is not None and d.victims.job_ids == ("young",)
    assert d.candidate.nodes == (1,)


@pytest.mark.parametrize(
    ("tier", "preemptible"),
    [(Tier.P2, None), (Tier.P3, False), (Tier.P2, False)],
    ids=["p2-default", "p3-opted-out", "p2-explicit"],
)
def test_non_preemptible_work_is_never_a_victim(tier: Tier, preemptible: bool | None) -> None:
    running = [work("keep", nodes=(0,), tier=tier, preemptible=preemptible)]
    p = pool(nodes=1, running=running)
    d = only(plan(BASE, queue=[job("p1", tier=Tier.P1)], pools=[p], running=running))
    assert isinstance(d, Wait)
    assert d.reason == "no pool can take it now (capacity)"


def test_only_the_preemptible_node_is_used_when_the_other_is_protected() -> None:
    running = [
        work("p2-train", nodes=(0,), tier=Tier.P2),  # non-preemptible by default
        work("p3-exp", nodes=(1,), tier=Tier.P3, started=NOW - 10 * H),
    ]
    d = only(
        plan(BASE, queue=[job("p1", tier=Tier.P1)], pools=[pool(running=running)], running=running)
    )
    assert isinstance(d, Place)
    assert d.victims is not None and d.victims.job_ids == ("p3-exp",)
    assert d.candidate.nodes == (1,)


@pytest.mark.parametrize(
    ("ago_s", "placed"),
    [(60, False), (299, False), (300, True), (3600, True), (None, True)],
    ids=["1min", "299s", "exactly-300s", "1h", "not-started-yet"],
)
def test_min_runtime_protects_just_started_work(ago_s: int | None, placed: bool) -> None:
    started = None if ago_s is None else NOW - timedelta(seconds=ago_s)
    running = [work("victim", started=started)]
    settings = replace(BASE, min_runtime_s=300.0)
    d = only(
        plan(
            settings,
            queue=[job("p1", tier=Tier.P1)],
            pools=[pool(nodes=1, running=running)],
            running=running,
        )
    )
    if placed:
        assert isinstance(d, Place)
        assert d.victims is not None and d.victims.job_ids == ("victim",)
    else:
        assert isinstance(d, Wait)
        assert "capacity" in d.reason


def test_no_preemption_when_disabled_or_for_p2() -> None:
    running = [work("victim")]
    pools = [pool(nodes=1, running=running)]
    off = only(
        plan(
            replace(BASE, preemption=False),
            queue=[job("p1", tier=Tier.P1)],
            pools=pools,
            running=running,
        )
    )
    assert isinstance(off, Wait)
    p2 = only(plan(BASE, queue=[job("p2", tier=Tier.P2)], pools=pools, running=running))
    assert isinstance(p2, Wait)  # only P1 (and quota owners) preempt


def test_p1_does_not_choose_victims_on_an_unhealthy_site() -> None:
    sick, ok = site("a-sick", health=Health.UNREACHABLE), site("b-ok")
    running = [
        work("on-sick", pool_id="a-sick/H100", nodes=(0,), gpus=8),
        work("ok-1", pool_id="b-ok/H100", nodes=(0,), gpus=4),
        work("ok-2", pool_id="b-ok/H100", nodes=(0,), gpus=4),
    ]
    pools = [
        pool(site_name="a-sick", nodes=1, running=running),
        pool(site_name="b-ok", nodes=1, running=running),
    ]
    d = only(
        plan(
            BASE,
            queue=[job("p1", tier=Tier.P1)],
            pools=pools,
            running=running,
            sites=[sick, ok],
        )
    )
    assert isinstance(d, Place), d
    assert d.candidate.site == "b-ok"
    assert d.victims is not None and d.victims.job_ids == ("ok-1", "ok-2")


def test_a_victim_missing_from_the_ledger_does_not_crash_the_pass() -> None:
    # the ledger shows 4 GPUs in use on the node, the running work claims 8 there
    running = [work("fresh", gpus=8, started=None)]
    p = replace(pool(nodes=1), node_use=(NodeUse.of_total(8, 4000),))
    d = only(plan(BASE, queue=[job("p1", tier=Tier.P1)], pools=[p], running=running))
    assert isinstance(d, Place)
    assert d.victims is not None and d.victims.job_ids == ("fresh",)


# ---- (2) carbon deferral ----------------------------------------------------------------

VALLEY = Oracle({"Z": with_hours(400.0, {3: 50.0})})  # 15:00-16:00 is clean


def test_p2_with_a_deadline_is_deferred_to_the_clean_valley() -> None:
    j = job("p2", deadline=NOW + 12 * H)
    d = only(plan(BASE, queue=[j], pools=[pool()], carbon=VALLEY))
    assert isinstance(d, Defer)
    assert d.until == NOW + 3 * H
    assert d.site == "s"
    assert "saves 87.5%" in d.reason  # 1 - 50/400


def test_deferral_never_starts_later_than_deadline_minus_duration_minus_margin() -> None:
    # 2 h job, deadline 22:00, margin 30 min: the latest start is 19:30, so 19:00.
    # Hours 17:00 and 18:00 are at 100; 21:00 and 22:00 at 10 (cleaner, but too late).
    carbon = Oracle({"Z": with_hours(400.0, {5: 100.0, 6: 100.0, 9: 10.0, 10: 10.0})})
    deadline = NOW + 10 * H
    j = job("p2", deadline=deadline, duration_s=7200)
    d = only(plan(BASE, queue=[j], pools=[pool()], carbon=carbon))
    assert isinstance(d, Defer)
    assert d.until == NOW + 5 * H
    assert d.until + timedelta(seconds=7200 + BASE.deferral_margin_s) <= deadline


def test_a_valley_only_after_the_latest_start_means_run_now() -> None:
    carbon = Oracle({"Z": with_hours(400.0, {9: 10.0, 10: 10.0})})
    j = job("p2", deadline=NOW + 10 * H, duration_s=7200)
    d = only(plan(BASE, queue=[j], pools=[pool()], carbon=carbon))
    assert isinstance(d, Place)


@pytest.mark.parametrize(
    ("deadline_after_valley_s", "deferred"),
    [(3600 + 1800, True), (3600 + 1799, False)],
    ids=["exactly-enough-slack", "one-second-short"],
)
def test_the_margin_boundary(deadline_after_valley_s: int, deferred: bool) -> None:
    deadline = NOW + 3 * H + timedelta(seconds=deadline_after_valley_s)
    d = only(plan(BASE, queue=[job("p2", deadline=deadline)], pools=[pool()], carbon=VALLEY))
    assert isinstance(d, Defer if deferred else Place)


@pytest.mark.parametrize(("min_saving", "deferred"), [(0.2, True), (0.3, False)])
def test_min_saving_threshold(min_saving: float, deferred: bool) -> None:
    carbon = Oracle({"Z": with_hours(400.0, {3: 300.0})})  # saves 25 %
    d = only(
        plan(
            replace(BASE, deferral_min_saving=min_saving),
            queue=[job("p2", deadline=NOW + 12 * H)],
            pools=[pool()],
            carbon=carbon,
        )
    )
    assert isinstance(d, Defer if deferred else Place)


def test_p1_is_never_deferred() -> None:
    d = only(
        plan(
            BASE,
            queue=[job("p1", tier=Tier.P1, deadline=NOW + 12 * H)],
            pools=[pool()],
            carbon=VALLEY,
        )
    )
    assert isinstance(d, Place)
    assert d.victims is None


def test_no_deferral_when_disabled_or_without_deadline() -> None:
    off = only(
        plan(
            replace(BASE, deferral=False),
            queue=[job("p2", deadline=NOW + 12 * H)],
            pools=[pool()],
            carbon=VALLEY,
        )
    )
    assert isinstance(off, Place)
    no_deadline = only(plan(BASE, queue=[job("p2")], pools=[pool()], carbon=VALLEY))
    assert isinstance(no_deadline, Place)


def test_p3_is_deferred_too() -> None:
    d = only(
        plan(
            BASE,
            queue=[job("p3", tier=Tier.P3, deadline=NOW + 12 * H)],
            pools=[pool()],
            carbon=VALLEY,
        )
    )
    assert isinstance(d, Defer)
    assert d.until == NOW + 3 * H


# ---- (3) weights ------------------------------------------------------------------------


def test_carbon_only_weights_pick_the_cleaner_zone() -> None:
    # Identical pools; by name alone "a-dirty" would win the tie-break.
    sites = [site("a-dirty", zone="DIRTY"), site("b-clean", zone="CLEAN")]
    pools = [pool(site_name="a-dirty", nodes=1), pool(site_name="b-clean", nodes=1)]
    carbon = Oracle({"DIRTY": flat(500.0), "CLEAN": flat(100.0)})
    settings = replace(BASE, weights={t: CARBON_ONLY for t in Tier})
    d = only(plan(settings, queue=[job("p2", gpus=1)], pools=pools, sites=sites, carbon=carbon))
    assert isinstance(d, Place)
    assert d.candidate.site == "b-clean"
    assert d.candidate.intensity_gco2_per_kwh == 100.0
    # 700 W × 1 GPU × 1 h × 0.8 utilisation × PUE 1.2 = 0.672 kWh, at 100 g/kWh
    assert d.candidate.energy_kwh == pytest.approx(0.672)
    assert d.candidate.gco2 == pytest.approx(67.2)

    swapped = Oracle({"DIRTY": flat(100.0), "CLEAN": flat(500.0)})
    d2 = only(plan(settings, queue=[job("p2", gpus=1)], pools=pools, sites=sites, carbon=swapped))
    assert isinstance(d2, Place)
    assert d2.candidate.site == "a-dirty"


def test_the_jobs_objective_overrides_the_tier_weights() -> None:
    sites = [site("a-clean", zone="CLEAN"), site("b-cheap", zone="DIRTY")]
    pools = [
        pool(site_name="a-clean", nodes=1, price=4.0),
        pool(site_name="b-cheap", nodes=1, price=1.0),
    ]
    carbon = Oracle({"DIRTY": flat(500.0), "CLEAN": flat(100.0)})
    settings = replace(BASE, weights={t: CARBON_ONLY for t in Tier})
    by_tier = only(
        plan(settings, queue=[job("j", gpus=1)], pools=pools, sites=sites, carbon=carbon)
    )
    assert isinstance(by_tier, Place)
    assert by_tier.candidate.site == "a-clean"

    cost_first = job("j", gpus=1, objective=Weights(cost=1, latency=0, carbon=0))
    d = only(plan(settings, queue=[cost_first], pools=pools, sites=sites, carbon=carbon))
    assert isinstance(d, Place)
    assert d.candidate.site == "b-cheap"
    assert d.candidate.price_per_gpu_hour == 1.0


# ---- (4) capacity within one pass -------------------------------------------------------


def test_capacity_taken_earlier_in_the_pass_is_not_offered_again() -> None:
    running = [work("other", nodes=(0,), tier=Tier.P2)]
    first = job("first", created=NOW - H)
    second = job("second", created=NOW)
    a, b = plan(BASE, queue=[second, first], pools=[pool(running=running)], running=running)
    assert isinstance(a, Place) and a.job.id == "first"
    assert a.candidate.nodes == (1,)
    assert isinstance(b, Wait) and b.job.id == "second"
    assert "capacity" in b.reason


def test_shared_node_fills_up_within_the_pass() -> None:
    queue = [job(f"q{i}", gpus=4, created=NOW - (3 - i) * H) for i in range(3)]
    decisions = plan(BASE, queue=queue, pools=[pool(nodes=1)])
    assert [type(d) for d in decisions] == [Place, Place, Wait]
    assert [d.job.id for d in decisions] == ["q0", "q1", "q2"]


# ---- (5) queue order --------------------------------------------------------------------


def test_tier_comes_before_submission_time() -> None:
    p3 = job("p3", tier=Tier.P3, created=NOW - 2 * H)
    p2 = job("p2", tier=Tier.P2, created=NOW - H)
    p1 = job("p1", tier=Tier.P1, created=NOW)
    decisions = plan(BASE, queue=[p3, p2, p1], pools=[pool(nodes=1)])
    assert [d.job.id for d in decisions] == ["p1", "p2", "p3"]
    assert [type(d) for d in decisions] == [Place, Wait, Wait]


@pytest.mark.parametrize(
    ("aging_per_hour", "winner"),
    # a holds 12 of 16 H100 (share 0.75), its job waited 2 h; b holds nothing.
    # aging 0.05: a at 0.75 - 0.1 = 0.65 > 0, b first. aging 1.0: a at -1.25 < 0, a first.
    [(0.05, "b-job"), (1.0, "a-job")],
)
def test_fair_share_orders_the_lighter_tenant_first(aging_per_hour: float, winner: str) -> None:
    running = [
        work("a-big", nodes=(0,), gpus=8, tier=Tier.P2, tenant="a"),
        work("a-small", nodes=(1,), gpus=4, tier=Tier.P2, tenant="a"),
    ]
    a_job = job("a-job", gpus=4, tenant="a", created=NOW - 2 * H)
    b_job = job("b-job", gpus=4, tenant="b", created=NOW)
    first, second = plan(
        replace(BASE, aging_per_hour=aging_per_hour),
        queue=[a_job, b_job],
        pools=[pool(running=running)],
        running=running,
    )
    assert isinstance(first, Place) and first.job.id == winner
    assert isinstance(second, Wait)


# ---- (6) quotas -------------------------------------------------------------------------

QUOTA_A = replace(BASE, quotas={"a": {Tier.P2: 8}})


def test_in_quota_work_is_not_borrowed() -> None:
    d = only(plan(QUOTA_A, queue=[job("j", tenant="a")], pools=[pool()]))
    assert isinstance(d, Place)
    assert not d.borrowed


def test_preemptible_work_over_quota_borrows_idle_gpus() -> None:
    running = [work("in-quota", nodes=(0,), tier=Tier.P2, tenant="a")]
    j = job("extra", tenant="a", preemptible=True)
    d = only(plan(QUOTA_A, queue=[j], pools=[pool(running=running)], running=running))
    assert isinstance(d, Place)
    assert d.borrowed
    assert d.candidate.nodes == (1,)


def test_non_preemptible_work_over_quota_runs_on_unreserved_gpus() -> None:
    running = [work("in-quota", nodes=(0,), tier=Tier.P2, tenant="a")]
    d = only(
        plan(
            QUOTA_A,
            queue=[job("extra", tenant="a")],
            pools=[pool(running=running)],
            running=running,
        )
    )
    assert isinstance(d, Place)
    assert not d.borrowed  # it could not be given back
    assert d.quota is not None and d.quota.reason.endswith("8 more fit in unreserved GPUs")


def test_non_preemptible_work_over_quota_waits_for_others_unused_guarantees() -> None:
    quotas = replace(BASE, quotas={"a": {Tier.P2: 8}, "b": {Tier.P2: 8}})
    running = [work("in-quota", nodes=(0,), tier=Tier.P2, tenant="a")]
    d = only(
        plan(
            quotas, queue=[job("extra", tenant="a")], pools=[pool(running=running)], running=running
        )
    )
    assert isinstance(d, Wait)
    assert d.code is Reason.QUOTA_RESERVED
    assert "tenant a holds 8 GPUs of P2 (nominal 8, no cap)" in d.reason
    assert "only preemptible work may borrow" in d.reason


def test_over_quota_waits_when_borrowing_is_disabled_or_nothing_is_idle() -> None:
    quotas = replace(BASE, quotas={"a": {Tier.P2: 8}, "b": {Tier.P2: 8}})
    running = [work("in-quota", nodes=(0,), tier=Tier.P2, tenant="a")]
    j = job("extra", tenant="a", preemptible=True)
    off = only(
        plan(
            replace(quotas, borrowing=False),
            queue=[j],
            pools=[pool(running=running)],
            running=running,
        )
    )
    assert isinstance(off, Wait)
    assert off.code is Reason.QUOTA_RESERVED
    assert "borrowing is disabled" in off.reason
    on = only(plan(quotas, queue=[j], pools=[pool(running=running)], running=running))
    assert isinstance(on, Place) and on.borrowed

    full = [*running, work("b-work", nodes=(1,), gpus=4, tier=Tier.P2, tenant="b")]
    d = only(plan(QUOTA_A, queue=[j], pools=[pool(running=full)], running=full))
    assert isinstance(d, Wait)
    assert d.code is Reason.NO_CAPACITY
    assert "too few GPUs are free now" in d.reason


def test_an_owner_under_quota_reclaims_borrowed_work() -> None:
    quotas = replace(BASE, quotas={"a": {Tier.P2: 8}, "b": {Tier.P2: 8}})
    running = [
        work("a-borrowed", nodes=(0,), tier=Tier.P2, preemptible=True, tenant="a", borrowed=True)
    ]
    d = only(
        plan(
            quotas,
            queue=[job("b-job", tenant="b")],
            pools=[pool(nodes=1, running=running)],
            running=running,
        )
    )
    assert isinstance(d, Place)
    assert not d.borrowed
    assert d.victims is not None
    assert d.victims.job_ids == ("a-borrowed",)
    assert "reclaiming its borrowed quota" in d.victims.reason


def test_an_owner_does_not_reclaim_work_that_is_not_borrowed() -> None:
    quotas = replace(BASE, quotas={"a": {Tier.P2: 8}, "b": {Tier.P2: 8}})
    running = [work("a-own", nodes=(0,), tier=Tier.P2, preemptible=True, tenant="a")]
    d = only(
        plan(
            quotas,
            queue=[job("b-job", tenant="b")],
            pools=[pool(nodes=1, running=running)],
            running=running,
        )
    )
    assert isinstance(d, Wait)


def test_an_owner_at_quota_does_not_reclaim() -> None:
    quotas = replace(BASE, quotas={"a": {Tier.P2: 8}, "b": {Tier.P2: 8}})
    running = [
        work("b-own", pool_id="s/H100", nodes=(0,), tier=Tier.P2, tenant="b"),
        work("a-borrowed", nodes=(1,), tier=Tier.P2, preemptible=True, tenant="a", borrowed=True),
    ]
    d = only(
        plan(
            quotas, queue=[job("b-job", tenant="b")], pools=[pool(running=running)], running=running
        )
    )
    assert isinstance(d, Wait)
    assert "too few GPUs are free now" in d.reason


def test_borrowing_counts_only_gpus_the_job_could_use() -> None:
    running = [work("b-exp", nodes=(0,), tenant="b")]
    pools = [pool(nodes=1, running=running), pool(model="T4", nodes=4, per_node=4)]
    j = job("a-p3", tier=Tier.P3, tenant="a", preemptible=True)
    d = only(plan(QUOTA_A, queue=[j], pools=pools, running=running))
    assert isinstance(d, Wait), d
    assert d.quota is not None and d.quota.idle == 0  # the 16 free T4s cannot take 8 per node
    assert "too few GPUs are free now" in d.reason


def test_p1_without_a_quota_entry_is_placed_on_an_idle_fleet() -> None:
    """Issue 15 §1: quotas for other tenants only; a P1 job used to wait forever."""
    others = replace(BASE, quotas={"b": {Tier.P2: 8}, "c": {Tier.P3: 4}})
    d = only(plan(others, queue=[job("p1", tier=Tier.P1, tenant="a", gpus=1)], pools=[pool()]))
    assert isinstance(d, Place)
    assert not d.borrowed


def test_p1_waits_at_its_own_cap() -> None:
    capped = replace(BASE, quotas={"a": {Tier.P1: TierQuota(nominal=1, borrowing_limit=0)}})
    running = [work("a-p1", nodes=(0,), gpus=1, tier=Tier.P1, tenant="a", preemptible=False)]
    d = only(
        plan(
            capped,
            queue=[job("p1", tier=Tier.P1, tenant="a", gpus=1)],
            pools=[pool(running=running)],
            running=running,
        )
    )
    assert isinstance(d, Wait)
    assert d.code is Reason.QUOTA_CAP_REACHED


# ---- (7) mean_intensity -----------------------------------------------------------------

SERIES = [(NOW, 100.0), (NOW + H, 300.0)]


def test_mean_intensity_over_two_half_hours() -> None:
    start = NOW + timedelta(minutes=30)
    assert mean_intensity(SERIES, start=start, end=start + H) == pytest.approx(200.0)


def test_mean_intensity_over_the_covered_part_only() -> None:
    # [12:30, 14:00) is covered: 30 min at 100 and 60 min at 300 -> 233.33
    start = NOW + timedelta(minutes=30)
    got = mean_intensity(SERIES, start=start, end=NOW + 3 * H)
    assert got == pytest.approx((0.5 * 100 + 1.0 * 300) / 1.5)


def test_mean_intensity_without_data() -> None:
    assert mean_intensity([], start=NOW, end=NOW + H) is None
    assert mean_intensity(SERIES, start=NOW + H, end=NOW + H) is None  # empty window
    assert mean_intensity(SERIES, start=NOW + 2 * H, end=NOW + 3 * H) is None  # after the data


def test_engine_conditions_use_the_run_window() -> None:
    # a 2-hour job starting now at 12:00 in zone Z: (400 + 50) / 2 = 225
    carbon = Oracle({"Z": with_hours(400.0, {1: 50.0})})
    conds = Engine(BASE).conditions(
        job("j", duration_s=7200).spec,
        sites=[site()],
        latency=LatencyMatrix({}),
        carbon=carbon,
        now=NOW,
    )
    assert conds["s"].intensity_gco2_per_kwh == pytest.approx(225.0)
    assert conds["s"].latency_ms is None


def test_outlook_prefix_sums_agree_with_direct_integration() -> None:
    import random

    from broker.domain.engine import Outlook, mean_intensity

    rng = random.Random(7)
    for _ in range(300):
        start = NOW + timedelta(minutes=rng.choice([0, 1, 17, 30, 59]))
        base = start.replace(minute=0, second=0, microsecond=0)
        hourly = [
            (base + timedelta(hours=i), rng.uniform(5, 800)) for i in range(rng.randint(1, 60))
        ]
        outlook = Outlook.of(hourly, start=start)
        assert outlook is not None
        for duration in (1, 60, 1800, 3600, 5400, rng.randint(1, 80 * 3600)):
            end = start + timedelta(seconds=duration)
            direct = mean_intensity(hourly, start=start, end=end)
            assert direct is not None
            assert outlook.mean(duration) == pytest.approx(direct, rel=1e-9)
    gap = [(NOW, 1.0), (NOW + timedelta(hours=2), 2.0)]
    assert Outlook.of(gap, start=NOW) is None
    assert Outlook.of([], start=NOW) is None
    assert Outlook.of([(NOW + timedelta(hours=1), 5.0)], start=NOW) is None  # starts late
