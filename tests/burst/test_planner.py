"""The planner alone: ranking, wait targets, packing, limits, failure memory, the forecast."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from broker.burst.model import Fleet, Offer, Plan, SkipReason, WaitingJob
from broker.burst.planner import plan, rank
from broker.burst.settings import BurstWeights
from broker.domain.enums import Tier
from tests.burst.helpers import LATENCY, NOW, burst_settings, job, offer


def make_plan(
    waiting: list[WaitingJob],
    offers: list[Offer],
    *,
    fleet: Fleet | None = None,
    short: dict[str, float] | None = None,
    short_any: float = 0.0,
    **settings: Any,
) -> Plan:
    return plan(
        now=NOW,
        waiting=waiting,
        offers=offers,
        fleet=fleet or Fleet(),
        settings=burst_settings(**settings),
        latency=LATENCY,
        short_gpus=short,
        short_any_gpus=short_any,
    )


CHEAP_DIRTY = offer("aws-east", price=5.0, intensity=700.0)
DEAR_CLEAN = offer("gcp-central", price=7.0, intensity=50.0, location="gcp:us-central1")


def test_ranking_weighs_cost_carbon_and_latency() -> None:
    offers = [CHEAP_DIRTY, DEAR_CLEAN]
    by_cost = BurstWeights(cost=1, latency=0, carbon=0)
    by_carbon = BurstWeights(cost=0, latency=0, carbon=1)
    assert rank(offers, weights=by_cost, latency=LATENCY, origin=None)[0] is CHEAP_DIRTY
    assert rank(offers, weights=by_carbon, latency=LATENCY, origin=None)[0] is DEAR_CLEAN
    # equal weights on two offers each best at one thing: a tie, which the cheaper wins
    assert rank(offers, weights=BurstWeights(), latency=LATENCY, origin=None)[0] is CHEAP_DIRTY
    near = offer("aws-north", price=7.0, intensity=700.0, location="aws:eu-north-1")
    by_latency = BurstWeights(cost=0, latency=1, carbon=0)
    ranked = rank([DEAR_CLEAN, near], weights=by_latency, latency=LATENCY, origin="origin:oslo")
    assert ranked[0] is near


def test_unknown_intensity_counts_as_the_worst() -> None:
    unknown = offer("aws-east", price=5.0, intensity=None)
    ranked = rank(
        [unknown, DEAR_CLEAN],
        weights=BurstWeights(cost=0.4, latency=0, carbon=0.6),
        latency=LATENCY,
        origin=None,
    )
    assert ranked[0] is DEAR_CLEAN


def test_the_plan_is_deterministic_whatever_the_input_order() -> None:
    jobs = [job(f"j{i}", gpus=2 + i % 3, waited_s=600 + i) for i in range(9)]
    offers = [CHEAP_DIRTY, DEAR_CLEAN, offer("aws-east", "A100", price=3.0, gpus=8)]
    first = make_plan(jobs, offers)
    for seed in range(5):
        rng = random.Random(seed)
        shuffled_jobs, shuffled_offers = jobs[:], offers[:]
        rng.shuffle(shuffled_jobs)
        rng.shuffle(shuffled_offers)
        assert make_plan(shuffled_jobs, shuffled_offers) == first


def test_jobs_past_their_wait_target_burst_and_p3_never_does_by_default() -> None:
    waiting = [
        job("p1-late", tier=Tier.P1, waited_s=61),
        job("p1-early", tier=Tier.P1, waited_s=30),
        job("p2-early", tier=Tier.P2, waited_s=1000),
        job("p3-ancient", tier=Tier.P3, waited_s=10 * 86400),
    ]
    result = make_plan(waiting, [CHEAP_DIRTY])
    assert [a.for_jobs for a in result.actions] == [("p1-late",)]
    assert result.skipped == ()


def test_jobs_share_instances_and_gang_nodes_get_their_own() -> None:
    waiting = [job(f"small-{i}", gpus=4) for i in range(3)] + [job("gang", gpus=8, nodes=2)]
    (action,) = make_plan(waiting, [CHEAP_DIRTY], max_per_action=8).actions
    # two 4-GPU jobs per 8-GPU instance (2 instances for three), the gang on two more
    assert action.count == 4
    assert set(action.for_jobs) == {"small-0", "small-1", "small-2", "gang"}
    assert action.usd_per_hour == pytest.approx(4 * 8 * 5.0)
    assert action.gco2e_per_hour == pytest.approx(4 * 8 * 0.7 * 700.0)


def test_only_offers_the_job_fits_are_used() -> None:
    a100 = offer("aws-east", "A100", price=1.0, gpus=1)
    waiting = [job("needs-8", gpus=8, models=("A100",))]
    result = make_plan(waiting, [a100])
    assert result.actions == ()
    assert [s.reason for s in result.skipped] == [SkipReason.NO_OFFER]
    # an offer the gatherer ruled out (region, SLO, abilities) is not used either
    ruled_out = make_plan([job("j", pools=frozenset({"elsewhere"}))], [CHEAP_DIRTY])
    assert [s.reason for s in ruled_out.skipped] == [SkipReason.NO_OFFER]


def test_the_global_budget_counts_spend_and_expected_cost() -> None:
    # one 8 x $5 instance for a 1 h job with no idle TTL is expected to cost $40
    waiting = [job("a", waited_s=900), job("b", waited_s=800)]
    result = make_plan(waiting, [CHEAP_DIRTY], budget_usd_per_day=100.0)
    assert [a.for_jobs for a in result.actions] == [("a", "b")]
    spent = Fleet(spent_usd=50.0)
    result = make_plan(waiting, [CHEAP_DIRTY], fleet=spent, budget_usd_per_day=100.0)
    assert [a.for_jobs for a in result.actions] == [("a",)]
    assert [(s.reason, s.job_ids) for s in result.skipped] == [(SkipReason.BUDGET, ("b",))]


def test_the_idle_ttl_is_part_of_the_expected_cost() -> None:
    result = make_plan([job("a")], [CHEAP_DIRTY], budget_usd_per_day=50.0, idle_ttl_s=1800)
    assert [s.reason for s in result.skipped] == [SkipReason.BUDGET]  # $40 + $20 > $50


def test_a_tenant_over_its_budget_does_not_stop_the_others() -> None:
    waiting = [
        job("nlp-1", tenant="nlp", waited_s=900),
        job("vision-1", tenant="vision", waited_s=800),
    ]
    fleet = Fleet(spent_by_tenant={"nlp": 30.0})
    result = make_plan(waiting, [CHEAP_DIRTY], fleet=fleet, tenant_budget_usd_per_day={"nlp": 50.0})
    assert [a.for_jobs for a in result.actions] == [("vision-1",)]
    assert result.actions[0].tenants == {"vision": 1.0}
    assert [(s.reason, s.job_ids) for s in result.skipped] == [
        (SkipReason.TENANT_BUDGET, ("nlp-1",))
    ]


def test_costs_are_shared_between_tenants_by_gpus() -> None:
    waiting = [job("a", tenant="nlp", gpus=6), job("b", tenant="vision", gpus=2)]
    (action,) = make_plan(waiting, [CHEAP_DIRTY]).actions
    assert action.count == 1 and action.tenants == {"nlp": 0.75, "vision": 0.25}


def test_max_instances_counts_what_is_alive() -> None:
    waiting = [job(f"j{i}", waited_s=1000 - i) for i in range(3)]
    fleet = Fleet(alive={("aws-east", "H100"): 6})
    result = make_plan(waiting, [CHEAP_DIRTY], fleet=fleet, max_instances=8)
    assert [a.for_jobs for a in result.actions] == [("j0", "j1")]
    assert [(s.reason, s.job_ids) for s in result.skipped] == [(SkipReason.MAX_INSTANCES, ("j2",))]


def test_one_pass_starts_at_most_max_per_action_instances() -> None:
    waiting = [job(f"j{i}", waited_s=1000 - i) for i in range(5)]
    result = make_plan(waiting, [CHEAP_DIRTY, DEAR_CLEAN], max_per_action=3)
    assert sum(a.count for a in result.actions) == 3
    assert {s.reason for s in result.skipped} == {SkipReason.MAX_BURST}


def test_jobs_an_open_burst_is_for_are_not_burst_for_again() -> None:
    result = make_plan(
        [job("a"), job("b")], [CHEAP_DIRTY], fleet=Fleet(covered_jobs=frozenset({"a"}))
    )
    assert [a.for_jobs for a in result.actions] == [("b",)]


def test_a_refused_target_is_skipped_until_its_memory_expires() -> None:
    waiting = [job("a")]
    offers = [DEAR_CLEAN, CHEAP_DIRTY]
    green = BurstWeights(cost=0.3, latency=0.1, carbon=0.6)
    assert make_plan(waiting, offers, weights=green).actions[0].provider_site == "gcp-central"
    fleet = Fleet(failed_until={("gcp-central", "H100"): NOW + timedelta(minutes=5)})
    assert (
        make_plan(waiting, offers, fleet=fleet, weights=green).actions[0].provider_site
        == "aws-east"
    )
    expired = Fleet(failed_until={("gcp-central", "H100"): NOW})
    again = make_plan(waiting, offers, fleet=expired, weights=green)
    assert again.actions[0].provider_site == "gcp-central"
    everywhere = Fleet(
        failed_until={k: NOW + timedelta(minutes=1) for k in (o.key for o in offers)}
    )
    result = make_plan(waiting, offers, fleet=everywhere, weights=green)
    assert result.actions == ()
    assert [s.reason for s in result.skipped] == [SkipReason.FAILED_RECENTLY]


def test_spot_tiers_buy_spot_and_the_others_on_demand() -> None:
    on_demand = offer("aws-east", price=6.0)
    spot = offer("aws-east", price=2.0, spot=True)
    waits = {Tier.P1: 60, Tier.P2: 60, Tier.P3: 60}
    waiting = [job("p2", tier=Tier.P2), job("p3", tier=Tier.P3)]
    actions = make_plan(waiting, [on_demand, spot], wait_target_s=waits).actions
    assert {a.for_jobs: a.spot for a in actions} == {("p2",): False, ("p3",): True}
    # without a spot market a spot tier falls back to on-demand
    (only,) = make_plan([job("p3", tier=Tier.P3)], [on_demand], wait_target_s=waits).actions
    assert only.spot is False


def test_the_forecast_bursts_for_what_burst_capacity_does_not_cover() -> None:
    fleet = Fleet(alive={("aws-east", "H100"): 1}, alive_gpus={"H100": 8.0})
    result = make_plan([], [CHEAP_DIRTY, DEAR_CLEAN], fleet=fleet, short={"H100": 20.0})
    (action,) = result.actions
    assert (action.count, action.spot, action.for_jobs) == (2, False, ())  # 12 more GPUs
    assert "forecast p90" in action.reason
    covered = make_plan([], [CHEAP_DIRTY], fleet=fleet, short={"H100": 8.0})
    assert covered.actions == ()
    anything = make_plan(
        [], [CHEAP_DIRTY, offer("aws-east", "L4", price=0.8, gpus=1)], short_any=3.0
    )
    assert [(a.gpu_model, a.count) for a in anything.actions] == [("L4", 3)]


def test_the_forecast_is_held_to_the_limits() -> None:
    result = make_plan([], [CHEAP_DIRTY], short={"H100": 40.0}, max_per_action=2)
    assert [a.count for a in result.actions] == [2]
    assert [s.reason for s in result.skipped] == [SkipReason.MAX_BURST]
    broke = make_plan([], [CHEAP_DIRTY], short={"H100": 8.0}, budget_usd_per_day=10.0)
    assert broke.actions == () and [s.reason for s in broke.skipped] == [SkipReason.BUDGET]
