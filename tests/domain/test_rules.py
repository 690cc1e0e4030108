"""The feasibility rule table, held to both of its readers.

`placement.evaluate` (the explain path) and `FleetIndex` (the scheduler) both read
`rules.RULES`. These tests fail when a rule reaches one path only: every reason but
capacity is a rule; for every rule there is a job and a pool that only that rule rejects,
and both paths must reject it (and keep the pool next to it); and on random fleets and
jobs, with the edge cases where the two paths used to disagree, the index keeps exactly
the pools `evaluate` does not reject by a rule.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.domain.engine import Engine, Hourly
from broker.domain.enums import Ability, Health, JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, NodePoolScope, Site
from broker.domain.fleet_index import NOT_SHAPE_FIELDS, RUN_FIELDS, FleetIndex
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.placement import Evaluation, static_rejection
from broker.domain.rules import (
    RULES,
    FromRoute,
    RejectReason,
    SiteConditions,
    applicable,
    first_failed,
    job_hourly,
    pool_price,
    rule_table,
)
from broker.domain.serde import spec_from_dict, spec_to_dict
from carbon.performance import shipped_table
from tests.domain import test_ranking as randomly

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
LATENCY = LatencyMatrix({("aws:origin", "aws:near"): 10.0, ("aws:origin", "aws:far"): 120.0})
ENGINE = Engine(randomly.SETTINGS)


class NoCarbon:
    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        return []


def make_site(name: str, **changes: Any) -> Site:
    base = Site(
        name=name,
        kind=SiteKind.SIM,
        region="r-ok",
        location="aws:near",
        grid_zone="Z",
        private=False,
    )
    return replace(base, **changes)


def make_pool(site: str, **changes: Any) -> GpuPool:
    base = GpuPool(
        id=f"{site}/gpus",
        site=site,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=2,
        price_on_demand=2.0,
        mig_profiles=("1g.10gb",),
        cpu_per_node=96,
        memory_gb_per_node=1024,
        node_pool=NodePoolScope(name="train"),  # one that takes any job
    )
    return replace(base, **changes)


def make_job(*, resources: Resources | None = None, **changes: Any) -> JobSpec:
    base = JobSpec(
        name="j",
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=resources or Resources(),
        workload=Workload(image="i"),
        estimated_duration_s=3600,
    )
    return replace(base, **changes)


# For each rule: a job it applies to, and the changes to a site and its pool that only
# this rule rejects. Next to it, an unchanged site and pool that every rule admits.
CASES: dict[RejectReason, tuple[JobSpec, dict[str, Any], dict[str, Any]]] = {
    RejectReason.SITE_UNHEALTHY: (make_job(), {"health": Health.UNREACHABLE}, {}),
    RejectReason.GPU_MODEL: (
        make_job(resources=Resources(gpu_models=("H100", "L4"))),
        {},
        {"gpu_model": "A100"},
    ),
    RejectReason.GPU_MEMORY: (
        make_job(resources=Resources(min_gpu_memory_gb=60)),
        {},
        {"gpu_memory_gb": 40},
    ),
    RejectReason.MIG_PROFILE: (
        make_job(resources=Resources(mig_profile="1g.10gb")),
        {},
        {"mig_profiles": ("3g.40gb",)},
    ),
    RejectReason.GPUS_PER_NODE: (make_job(resources=Resources(gpus=4)), {}, {"gpus_per_node": 2}),
    RejectReason.NODES: (make_job(resources=Resources(nodes=2)), {}, {"nodes": 1}),
    RejectReason.CPU: (make_job(resources=Resources(cpu=64)), {}, {"cpu_per_node": 32}),
    RejectReason.MEMORY: (
        make_job(resources=Resources(memory_gb=512)),
        {},
        {"memory_gb_per_node": 256},
    ),
    RejectReason.ABILITY: (
        make_job(resources=Resources(gpu_fraction=0.5)),
        {"lacks": frozenset({Ability.FRACTIONAL_GPU})},
        {},
    ),
    RejectReason.REGION: (
        make_job(allowed_regions=("r-ok",)),
        {"region": "r-elsewhere"},
        {},
    ),
    RejectReason.LATENCY_UNKNOWN: (
        make_job(origin="aws:origin", latency_slo_ms=50.0),
        {"location": "aws:unmeasured"},
        {},
    ),
    RejectReason.LATENCY_SLO: (
        make_job(origin="aws:origin", latency_slo_ms=50.0),
        {"location": "aws:far"},
        {},
    ),
    RejectReason.COST: (make_job(max_hourly_cost=5.0), {}, {"price_on_demand": 10.0}),
    # with the performance model off only board power is checked, and always: a model with
    # no power figure would draw 0 W in the ranking
    RejectReason.GPU_PERFORMANCE: (make_job(), {}, {"gpu_model": "RTX6000-ADA"}),
    RejectReason.NODE_POOL: (
        make_job(node_pool="train"),
        {},
        {"node_pool": NodePoolScope(name="infer")},
    ),
    RejectReason.NODE_POOL_SCOPE: (
        make_job(),  # a P2 training job
        {},
        {"node_pool": NodePoolScope(name="infer", tiers=frozenset({Tier.P1}))},
    ),
}


# Rules that reject a case's pool too: an unknown latency never meets an SLO either (the
# explain path names the first in table order).
ALSO = {RejectReason.LATENCY_UNKNOWN: {RejectReason.LATENCY_SLO}}


def both_paths(
    spec: JobSpec, sites: list[Site], pools: list[GpuPool], latency: LatencyMatrix = LATENCY
) -> tuple[Evaluation, set[str], FleetIndex]:
    """What `evaluate` says, and the pools the index keeps for the job's shape (asked
    after a plain job's, so a shape key that missed what a rule reads would show)."""
    index = ENGINE.fleet_index(
        pools=pools, sites=sites, latency=latency, carbon=NoCarbon(), now=NOW, longest_s=3600
    )
    index.shape(make_job())
    conds = ENGINE.conditions(spec, sites=sites, latency=latency, carbon=NoCarbon(), now=NOW)
    ev = ENGINE.evaluate(spec, pools=index.pools, conditions=conds)
    kept = {index.pools[i].id for i in index.shape(spec).idx.tolist()}
    return ev, kept, index


def test_every_reason_but_capacity_is_exactly_one_rule() -> None:
    names = [rule.reason for rule in RULES]
    assert len(names) == len(set(names))
    assert set(names) == set(RejectReason) - {RejectReason.CAPACITY, RejectReason.DEADLINE}
    assert set(CASES) == set(names), "every rule needs a case"


def test_with_the_model_on_a_missing_throughput_figure_alone_rejects() -> None:
    """The shipped table has no training figure for H100: with `gpu_performance` on, a
    training job measured on A100-80GB cannot be timed there, in either path."""
    on = Engine(replace(ENGINE.settings, gpu_performance=True))
    spec = make_job(kind=JobKind.TRAINING)
    ok, bad = make_site("ok"), make_site("bad")
    ok_pool, bad_pool = make_pool("ok", gpu_model="A100-80GB"), make_pool("bad")
    index = on.fleet_index(
        pools=[ok_pool, bad_pool],
        sites=[ok, bad],
        latency=LATENCY,
        carbon=NoCarbon(),
        now=NOW,
        longest_s=3600,
    )
    conds = on.conditions(spec, sites=[ok, bad], latency=LATENCY, carbon=NoCarbon(), now=NOW)
    ev = on.evaluate(spec, pools=index.pools, conditions=conds)
    assert [(r.pool_id, r.reason) for r in ev.rejections] == [
        (bad_pool.id, RejectReason.GPU_PERFORMANCE)
    ]
    assert "scheduler.gpu_throughput.H100.training" in ev.rejections[0].detail
    assert [c.pool_id for c in ev.candidates] == [ok_pool.id]
    assert {index.pools[i].id for i in index.shape(spec).idx.tolist()} == {ok_pool.id}
    others = [
        (r, n)
        for r, n in applicable(spec, live=True, rules=on.rules)
        if r.reason is not RejectReason.GPU_PERFORMANCE
    ]
    assert first_failed(others, bad_pool, conds["bad"]) is None, "only this rule may reject"
    # off (the default) the same pool is placeable: H100 has a board power figure
    assert static_rejection(spec, bad_pool, conds["bad"]) is None
    # an inference job has H100 figures, so the pool takes it with the model on too
    assert (
        static_rejection(make_job(kind=JobKind.INFERENCE), bad_pool, conds["bad"], rules=on.rules)
        is None
    )


def test_run_fields_shape_jobs_only_with_the_model_on() -> None:
    """`RUN_FIELDS` (the reference model) are read by the performance rule only when the
    model is on; off, every job has the same need of it."""
    on = rule_table(shipped_table())
    a = make_job(kind=JobKind.INFERENCE)
    b = make_job(kind=JobKind.INFERENCE, reference_gpu_model="H100")
    assert [r.need(a) for r in RULES] == [r.need(b) for r in RULES]
    assert [r.need(a) for r in on] != [r.need(b) for r in on]
    assert RUN_FIELDS.isdisjoint(NOT_SHAPE_FIELDS)


def test_latency_rules_work_on_arrays() -> None:
    # the index applies them to the column of every pool's latency at once
    assert all(rule.elementwise for rule in RULES if isinstance(rule.offer, FromRoute))


@pytest.mark.parametrize("reason", list(CASES), ids=str)
def test_each_rule_alone_rejects_in_both_paths(reason: RejectReason) -> None:
    spec, site_changes, pool_changes = CASES[reason]
    rule = next(r for r in RULES if r.reason is reason)
    ok, bad = make_site("ok"), make_site("bad", **site_changes)
    ok_pool, bad_pool = make_pool("ok"), make_pool("bad", **pool_changes)
    assert rule.need(spec) is not None, "the job must be one the rule applies to"
    cond = ENGINE.conditions(spec, sites=[bad], latency=LATENCY, carbon=NoCarbon(), now=NOW)
    skip = {reason, *ALSO.get(reason, set())}
    others = [(r, n) for r, n in applicable(spec, live=True) if r.reason not in skip]
    assert first_failed(others, bad_pool, cond["bad"]) is None, "only this rule may reject"

    ev, kept, _ = both_paths(spec, [ok, bad], [ok_pool, bad_pool])

    assert [(r.pool_id, r.reason) for r in ev.rejections] == [(bad_pool.id, reason)]
    assert ev.rejections[0].detail
    assert [c.pool_id for c in ev.candidates] == [ok_pool.id]
    assert kept == {ok_pool.id}
    static = static_rejection(spec, bad_pool, cond["bad"])
    if rule.live:  # "could it ever run there" leaves the site's state now out
        assert static is None
    else:
        assert static is not None and static.reason is reason


def test_the_shape_key_covers_every_field_a_rule_reads() -> None:
    """The index looks shapes up by the job's fields but NOT_SHAPE_FIELDS: no rule may
    read those."""
    assert NOT_SHAPE_FIELDS.issubset(f.name for f in fields(JobSpec))
    changed: dict[str, Callable[[JobSpec], object]] = {
        "name": lambda spec: spec.name + "x",
        "workload": lambda spec: Workload(image="other", command=("run",)),
        "estimated_duration_s": lambda spec: spec.estimated_duration_s * 2 + 1,
        "deadline": lambda spec: NOW if spec.deadline is None else None,
        "objective": lambda spec: (
            Weights(cost=1, latency=2, carbon=3) if spec.objective is None else None
        ),
    }
    assert set(changed) == NOT_SHAPE_FIELDS, "say how to change each field left out"
    rng = random.Random(7)
    for _ in range(300):
        spec = randomly.job_spec(rng)
        other = replace(spec, **{name: change(spec) for name, change in changed.items()})
        assert [r.need(spec) for r in RULES] == [r.need(other) for r in RULES]


def edge_case(rng: random.Random, spec: JobSpec, pools: list[GpuPool]) -> JobSpec:
    """Where the two paths used to disagree, or could: an SLO without an origin, a
    fraction that needs a whole GPU's milli-GPUs, a cost cap right at a pool's price."""
    roll = rng.random()
    if roll < 0.15:
        return replace(spec, origin=None, latency_slo_ms=rng.choice((60.0, 150.0)))
    if roll < 0.35:
        res = replace(spec.resources, gpus=1, mig_profile=None, gpu_fraction=0.9999, nodes=1)
        return replace(spec, resources=res)
    if roll < 0.5 and pools:
        pool = rng.choice(pools)
        price = pool_price(pool, preemptible=spec.is_preemptible)[0]
        return replace(spec, max_hourly_cost=job_hourly(price, spec.resources.total_milli))
    if roll < 0.6:
        return replace(spec, allowed_regions=("r1", randomly.LOCATIONS[1]))
    return spec


@pytest.mark.parametrize("seed", range(40))
def test_the_index_keeps_exactly_the_pools_no_rule_rejects(seed: int) -> None:
    rng = random.Random(5000 + seed)
    sites, pools, latency = randomly.fleet(rng)
    carbon = randomly.Series(rng)
    index = ENGINE.fleet_index(
        pools=pools, sites=sites, latency=latency, carbon=carbon, now=randomly.NOW, longest_s=0
    )
    for _ in range(60):
        spec = edge_case(rng, randomly.job_spec(rng), pools)
        conds = ENGINE.conditions(
            spec, sites=sites, latency=latency, carbon=carbon, now=randomly.NOW
        )
        ev = ENGINE.evaluate(spec, pools=index.pools, conditions=conds)
        could = {c.pool_id for c in ev.candidates} | {
            r.pool_id for r in ev.rejections if r.reason is RejectReason.CAPACITY
        }
        kept = {index.pools[i].id for i in index.shape(spec).idx.tolist()}
        assert kept == could, spec


def test_a_fraction_that_rounds_up_to_a_whole_gpu_still_needs_fractional_gpus() -> None:
    """A 0.9999 GPU fraction takes 1000 milli-GPUs, as one whole GPU does; the index once
    keyed shapes without the fraction and gave the second job the first one's pools."""
    sites = [make_site("whole-only", lacks=frozenset({Ability.FRACTIONAL_GPU})), make_site("any")]
    pools = [make_pool(s.name) for s in sites]
    whole = make_job(resources=Resources(gpus=1))
    fraction = make_job(resources=Resources(gpu_fraction=0.9999))
    assert whole.resources.milli_per_node == fraction.resources.milli_per_node
    for order in ((whole, fraction), (fraction, whole)):  # the first one seen is cached
        index = ENGINE.fleet_index(
            pools=pools, sites=sites, latency=LATENCY, carbon=NoCarbon(), now=NOW, longest_s=0
        )
        for spec in order:
            want = {"whole-only/gpus", "any/gpus"} if spec is whole else {"any/gpus"}
            assert {index.pools[i].id for i in index.shape(spec).idx.tolist()} == want
    ev, kept, _ = both_paths(fraction, sites, pools)
    assert kept == {"any/gpus"} == {c.pool_id for c in ev.candidates}


def test_a_latency_slo_without_an_origin_is_never_met() -> None:
    """The API refuses such a job; a job built in code gets the explain path's answer
    (latency unknown everywhere) in the scheduler too, which once ignored the SLO."""
    spec = make_job(latency_slo_ms=50.0)
    ev, kept, _ = both_paths(spec, [make_site("a")], [make_pool("a")])
    assert kept == set()
    assert [r.reason for r in ev.rejections] == [RejectReason.LATENCY_UNKNOWN]


def test_a_cost_cap_equal_to_the_price_admits_the_pool_in_both_paths() -> None:
    """3 GPUs at $0.05 cost $0.15 an hour: within a $0.15 cap. The index once computed
    0.05 x 3.0 = 0.15000000000000002 and refused the pool `evaluate` admitted."""
    spec = make_job(resources=Resources(gpus=3), max_hourly_cost=0.15)
    ev, kept, _ = both_paths(spec, [make_site("a")], [make_pool("a", price_on_demand=0.05)])
    assert kept == {"a/gpus"} == {c.pool_id for c in ev.candidates}


def test_site_health_is_left_out_when_asking_whether_a_job_could_ever_fit() -> None:
    spec = make_job()
    down = make_site("down", health=Health.UNREACHABLE)
    conds = ENGINE.conditions(spec, sites=[down], latency=LATENCY, carbon=NoCarbon(), now=NOW)
    pools = [make_pool("down")]
    ever = ENGINE.evaluate(spec, pools=pools, conditions=conds, ignore_capacity=True)
    now = ENGINE.evaluate(spec, pools=pools, conditions=conds)
    assert ever.best is not None
    assert [r.reason for r in now.rejections] == [RejectReason.SITE_UNHEALTHY]


def test_rejections_name_the_first_rule_in_table_order() -> None:
    """A pool that fails several rules is explained by the first, in table order."""
    spec = make_job(
        resources=Resources(gpu_models=("H100",), cpu=64), max_hourly_cost=1.0
    )  # wrong model, too few CPUs and too dear: the model comes first
    pool = make_pool("a", gpu_model="A100", cpu_per_node=8, price_on_demand=9.0)
    ev, kept, _ = both_paths(spec, [make_site("a")], [pool])
    assert kept == set()
    assert [r.reason for r in ev.rejections] == [RejectReason.GPU_MODEL]
    order = [r.reason for r in RULES]
    assert order.index(RejectReason.GPU_MODEL) < order.index(RejectReason.CPU)


def test_the_ability_rule_names_the_first_ability_the_site_lacks() -> None:
    """Against a hand-written table of what each kind of job needs, in naming order."""
    kinds = [
        (Resources(), [Ability.DISPATCH]),
        (Resources(nodes=2), [Ability.DISPATCH, Ability.GANG]),
        (Resources(mig_profile="1g.10gb"), [Ability.DISPATCH, Ability.MIG]),
        (Resources(gpu_fraction=0.5), [Ability.DISPATCH, Ability.FRACTIONAL_GPU]),
        (
            Resources(nodes=2, gpu_fraction=0.5),
            [Ability.DISPATCH, Ability.GANG, Ability.FRACTIONAL_GPU],
        ),
    ]
    abilities = sorted(Ability)
    for bits in range(2 ** len(abilities)):
        lacks = frozenset(a for i, a in enumerate(abilities) if bits >> i & 1)
        site = make_site("a", lacks=lacks)
        for res, needs in kinds:
            spec = make_job(resources=res)
            got = static_rejection(spec, make_pool("a"), SiteConditions(site=site))
            lacking = next((a for a in needs if a in lacks), None)
            if lacking is None:
                assert got is None
            else:
                assert got is not None and got.reason is RejectReason.ABILITY
                assert got.detail == f"the site's connector lacks {lacking.value}"


def test_node_pools_take_their_tiers_kinds_and_the_jobs_that_name_them() -> None:
    """A node pool kept for tiers or kinds takes those jobs only; a job that names a node
    pool goes to no other; explain says which, in both paths."""
    infer = NodePoolScope(name="infer", tiers=frozenset({Tier.P1}))
    train = NodePoolScope(name="train", kinds=frozenset({JobKind.TRAINING}))
    sites = [make_site("a")]
    pools = [
        make_pool("a", id="a/infer", node_pool=infer),
        make_pool("a", id="a/train", node_pool=train),
        make_pool("a", id="a/plain", node_pool=None),
    ]
    cases = [
        (make_job(tier=Tier.P1, kind=JobKind.INFERENCE), {"a/infer", "a/plain"}),
        (make_job(tier=Tier.P2, kind=JobKind.TRAINING), {"a/train", "a/plain"}),
        (make_job(tier=Tier.P1, kind=JobKind.TRAINING), {"a/infer", "a/train", "a/plain"}),
        (make_job(tier=Tier.P3, kind=JobKind.EXPERIMENT), {"a/plain"}),
        (make_job(tier=Tier.P2, kind=JobKind.TRAINING, node_pool="train"), {"a/train"}),
        (make_job(tier=Tier.P2, kind=JobKind.TRAINING, node_pool="infer"), set()),
    ]
    for spec, could in cases:
        assert spec_from_dict(spec_to_dict(spec)) == spec
        ev, kept, _ = both_paths(spec, sites, pools)
        assert {c.pool_id for c in ev.candidates} == could, spec
        assert kept == could, spec
    ev, _, _ = both_paths(make_job(tier=Tier.P3, kind=JobKind.EXPERIMENT), sites, pools)
    assert {(r.pool_id, r.reason, r.detail) for r in ev.rejections} == {
        ("a/infer", RejectReason.NODE_POOL_SCOPE, "node pool infer takes tiers P1 only"),
        ("a/train", RejectReason.NODE_POOL_SCOPE, "node pool train takes kinds training only"),
    }
    ev, _, _ = both_paths(make_job(node_pool="infer"), sites, pools)
    assert {(r.pool_id, r.reason, r.detail) for r in ev.rejections} == {
        ("a/train", RejectReason.NODE_POOL, "job asks node pool infer, pool is in node pool train"),
        ("a/plain", RejectReason.NODE_POOL, "job asks node pool infer, pool is in none"),
        # asking for infer does not lift its tiers: a P2 job is refused there still
        ("a/infer", RejectReason.NODE_POOL_SCOPE, "node pool infer takes tiers P1 only"),
    }


@pytest.mark.parametrize("seed", range(10))
def test_the_index_agrees_with_evaluate_on_node_pools(seed: int) -> None:
    rng = random.Random(9000 + seed)
    sites, pools, latency = randomly.fleet(rng)
    scopes = [
        None,
        NodePoolScope(name="infer", tiers=frozenset({Tier.P1})),
        NodePoolScope(name="train", kinds=frozenset({JobKind.TRAINING, JobKind.EXPERIMENT})),
        NodePoolScope(name="any"),
    ]
    pools = [replace(p, node_pool=rng.choice(scopes)) for p in pools]
    carbon = randomly.Series(rng)
    index = ENGINE.fleet_index(
        pools=pools, sites=sites, latency=latency, carbon=carbon, now=randomly.NOW, longest_s=0
    )
    for _ in range(40):
        spec = replace(
            randomly.job_spec(rng),
            kind=rng.choice(list(JobKind)),
            node_pool=rng.choice((None, None, "infer", "train", "any", "none")),
        )
        conds = ENGINE.conditions(
            spec, sites=sites, latency=latency, carbon=carbon, now=randomly.NOW
        )
        ev = ENGINE.evaluate(spec, pools=index.pools, conditions=conds)
        could = {c.pool_id for c in ev.candidates} | {
            r.pool_id for r in ev.rejections if r.reason is RejectReason.CAPACITY
        }
        kept = {index.pools[i].id for i in index.shape(spec).idx.tolist()}
        assert kept == could, spec
