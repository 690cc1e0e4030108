"""The pure placement engine: feasibility reasons, scoring and best-fit tie-breaks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from broker.domain.enums import (
    Ability,
    Health,
    JobKind,
    JobState,
    SiteKind,
    Tier,
    can_transition,
)
from broker.domain.fleet import GpuPool, Site, mig_milli, mig_slices
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.domain.nodes import Demand, NodeUse
from broker.domain.objective import Weights
from broker.domain.placement import evaluate
from broker.domain.rules import RejectReason, SiteConditions


def site(
    name: str, *, location: str = "aws:us-east-1", health: Health = Health.HEALTHY, pue: float = 1.0
) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region=name,
        location=location,
        grid_zone="Z",
        private=False,
        pue=pue,
        health=health,
    )


def pool(
    site_name: str,
    model: str = "H100",
    *,
    per_node: int = 8,
    nodes: int = 2,
    price: float = 2.0,
    allocated_gpus: float = 0,
    mig: tuple[str, ...] = (),
    mem: float = 80,
) -> GpuPool:
    # `allocated_gpus` fills nodes in order, whole nodes first
    left, used = int(allocated_gpus * 1000), []
    for _ in range(nodes):
        take = min(left, per_node * 1000)
        used.append(take)
        left -= take
    return GpuPool(
        id=f"{site_name}/{model}",
        site=site_name,
        gpu_model=model,
        gpu_memory_gb=mem,
        gpus_per_node=per_node,
        nodes=nodes,
        price_on_demand=price,
        mig_profiles=mig,
        node_use=tuple(NodeUse.of_total(per_node, u) for u in used),
    )


def spec(**kw: object) -> JobSpec:
    res = kw.pop("resources", Resources(gpus=1))
    base = dict(
        name="j",
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=res,
        workload=Workload(image="i"),
        estimated_duration_s=3600,
    )
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def conds(
    *sites: Site, intensity: dict[str, float] | None = None, latency: dict[str, float] | None = None
) -> dict[str, SiteConditions]:
    return {
        s.name: SiteConditions(
            site=s,
            intensity_gco2_per_kwh=(intensity or {}).get(s.name),
            latency_ms=(latency or {}).get(s.name),
        )
        for s in sites
    }


EVEN = Weights(cost=1, latency=1, carbon=1)


def test_every_rejection_has_its_reason() -> None:
    sites = [site("a"), site("b"), site("c"), site("d", health=Health.UNREACHABLE), site("e")]
    pools = [
        pool("a", "L4", mem=24),
        pool("b", per_node=4),
        pool("c", allocated_gpus=16),
        pool("d"),
        pool("e", mig=("3g.40gb",)),
    ]
    job = spec(resources=Resources(gpus=8, gpu_models=("H100",), min_gpu_memory_gb=40))
    ev = evaluate(job, pools=pools, conditions=conds(*sites), weights=EVEN)
    reasons = {r.site: r.reason for r in ev.rejections}
    assert reasons == {
        "a": RejectReason.GPU_MODEL,
        "b": RejectReason.GPUS_PER_NODE,
        "c": RejectReason.CAPACITY,
        "d": RejectReason.SITE_UNHEALTHY,
    }
    assert [c.site for c in ev.candidates] == ["e"]


def test_latency_slo_region_and_cost_caps() -> None:
    sites = [site("near"), site("far", location="gcp:europe-north1"), site("cheap")]
    pools = [pool("near", price=10.0), pool("far", price=1.0), pool("cheap", price=1.0)]
    job = spec(
        latency_slo_ms=30,
        origin="aws:us-east-1",
        max_hourly_cost=5.0,
        allowed_regions=("near", "far"),
    )
    ev = evaluate(
        job,
        pools=pools,
        weights=EVEN,
        conditions=conds(*sites, latency={"near": 2.0, "far": 110.0, "cheap": 3.0}),
    )
    reasons = {r.site: r.reason for r in ev.rejections}
    assert reasons == {
        "near": RejectReason.COST,
        "far": RejectReason.LATENCY_SLO,
        "cheap": RejectReason.REGION,
    }
    unknown = evaluate(
        spec(latency_slo_ms=30, origin="x"),
        pools=pools[:1],
        weights=EVEN,
        conditions=conds(sites[0]),
    )
    assert unknown.rejections[0].reason is RejectReason.LATENCY_UNKNOWN


def test_carbon_weight_picks_the_cleaner_site_and_cost_weight_the_cheaper() -> None:
    sites = [site("dirty"), site("clean")]
    pools = [pool("dirty", price=1.0), pool("clean", price=3.0)]
    c = conds(*sites, intensity={"dirty": 500.0, "clean": 20.0})
    green = evaluate(
        spec(), pools=pools, conditions=c, weights=Weights(cost=0, latency=0, carbon=1)
    )
    cheap = evaluate(
        spec(), pools=pools, conditions=c, weights=Weights(cost=1, latency=0, carbon=0)
    )
    assert green.best is not None and green.best.site == "clean"
    assert cheap.best is not None and cheap.best.site == "dirty"
    # energy: H100 700 W x 1 GPU x 1 h x 0.8 utilisation x PUE 1.0 = 0.56 kWh
    dirty = next(x for x in green.candidates if x.site == "dirty")
    assert dirty.energy_kwh == pytest.approx(0.56)
    assert dirty.gco2 == pytest.approx(0.56 * 500)
    assert dirty.cost_usd == pytest.approx(1.0)
    assert green.best.carbon_term == 0.0 and dirty.carbon_term == 1.0


def test_ties_go_to_the_tightest_fit_so_whole_nodes_stay_free() -> None:
    sites = [site("roomy"), site("snug")]
    pools = [pool("roomy", nodes=4), pool("snug", nodes=4, allocated_gpus=6)]
    ev = evaluate(
        spec(resources=Resources(gpus=2)), pools=pools, conditions=conds(*sites), weights=EVEN
    )
    assert [c.site for c in ev.candidates] == ["snug", "roomy"]
    assert ev.candidates[0].nodes == (0,) and ev.candidates[0].leftover_milli == 0


def test_best_fit_inside_a_pool_and_fragmentation_blocks_whole_node_jobs() -> None:
    p = GpuPool(
        id="a/H100",
        site="a",
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=4,
        price_on_demand=1.0,
        node_use=tuple(NodeUse.of_total(8, u) for u in (4000, 0, 7000, 4000)),
    )
    one, four, eight = Demand(1000), Demand(4000), Demand(8000)
    assert p.fit(one, count=1) == (2,)  # the fullest node that still fits
    assert p.fit(four, count=2) == (0, 3)
    assert p.fit(eight, count=1) == (1,)
    assert p.fit(eight, count=2) is None  # gang: all nodes at once or none
    assert p.allocate((1,), eight).fit(eight, count=1) is None
    assert p.release((0, 3), ((0, 1, 2, 3),) * 2, four).node_used() == (0, 0, 7000, 0)
    with pytest.raises(ValueError, match="node 2"):
        p.allocate((2,), Demand(2000))
    # 13 GPUs free in all, but no 8-GPU block once node 1 is taken: the reason says so
    sites = [site("a")]
    ev = evaluate(
        spec(resources=Resources(gpus=8)),
        pools=[p.allocate((1,), one)],
        conditions=conds(*sites),
        weights=EVEN,
    )
    assert ev.best is None
    assert ev.rejections[0].reason is RejectReason.CAPACITY
    assert "0 node(s) have that" in ev.rejections[0].detail


def test_preemptible_work_uses_spot_prices() -> None:
    sites = [site("a")]
    p = replace(pool("a", price=4.0), price_spot=1.0)
    p3 = evaluate(spec(tier=Tier.P3), pools=[p], conditions=conds(*sites), weights=EVEN)
    p2 = evaluate(spec(tier=Tier.P2), pools=[p], conditions=conds(*sites), weights=EVEN)
    assert p3.best is not None and p3.best.spot and p3.best.cost_usd == pytest.approx(1.0)
    assert p2.best is not None and not p2.best.spot and p2.best.cost_usd == pytest.approx(4.0)


def test_mig_and_fractions_share_one_ledger() -> None:
    assert mig_slices("3g.40gb") == 3
    assert mig_milli("1g.10gb") == 142  # rounded down: seven 1g slices fit on one GPU
    assert mig_milli("7g.80gb") == 1000
    with pytest.raises(ValueError, match="MIG"):
        mig_slices("big")
    assert Resources(gpu_fraction=0.25).total_milli == 250
    assert Resources(gpus=2, nodes=3).total_milli == 6000
    sites = [site("a")]
    nearly_full = [pool("a", nodes=1, allocated_gpus=7.9, mig=("1g.10gb",))]
    fits = evaluate(
        spec(resources=Resources(gpu_fraction=0.1)),
        pools=nearly_full,
        conditions=conds(*sites),
        weights=EVEN,
    )
    too_big = evaluate(
        spec(resources=Resources(mig_profile="1g.10gb")),
        pools=nearly_full,
        conditions=conds(*sites),
        weights=EVEN,
    )
    assert fits.best is not None
    assert too_big.best is None and too_big.rejections[0].reason is RejectReason.CAPACITY


def test_ignore_capacity_answers_could_it_ever_fit() -> None:
    sites = [site("a", health=Health.UNREACHABLE)]
    full = [pool("a", allocated_gpus=16)]
    assert (
        evaluate(
            spec(), pools=full, conditions=conds(*sites), weights=EVEN, ignore_capacity=True
        ).best
        is not None
    )
    assert evaluate(spec(), pools=full, conditions=conds(*sites), weights=EVEN).best is None


def test_weights_normalise() -> None:
    w = Weights(cost=2, latency=0, carbon=2).normalised()
    assert (w.cost, w.latency, w.carbon) == (0.5, 0.0, 0.5)
    z = Weights(cost=0, latency=0, carbon=0).normalised()
    assert z.cost == pytest.approx(1 / 3)


def test_state_machine() -> None:
    assert can_transition(JobState.PENDING, JobState.SCHEDULED)
    assert can_transition(JobState.RUNNING, JobState.PREEMPTED)
    assert can_transition(JobState.PREEMPTED, JobState.PENDING)
    assert not can_transition(JobState.SUCCEEDED, JobState.RUNNING)
    assert not can_transition(JobState.PENDING, JobState.RUNNING)
    assert all(s.terminal == (not any(can_transition(s, d) for d in JobState)) for s in JobState)


def test_latency_matrix_uses_the_smaller_direction() -> None:
    m = LatencyMatrix.from_rows([("a", "b", 30.0), ("b", "a", 130.0), ("a", "c", 5.0)])
    assert m.rtt("a", "b") == 30.0
    assert m.rtt("b", "a") == 30.0
    assert m.rtt("c", "a") == 5.0
    assert m.rtt("a", "a") == 0.0
    assert m.rtt("b", "c") is None


def test_p3_is_preemptible_by_default_and_others_are_not() -> None:
    assert spec(tier=Tier.P3).is_preemptible
    assert not spec(tier=Tier.P2).is_preemptible
    assert spec(tier=Tier.P2, preemptible=True).is_preemptible


def test_spec_dict_round_trip_normalises_deadlines_to_utc() -> None:
    from datetime import datetime, timedelta, timezone

    from broker.domain.serde import spec_from_dict, spec_to_dict

    original = spec(
        resources=Resources(gpus=2, gpu_models=("H100", "A100"), min_gpu_memory_gb=40, nodes=2),
        deadline=datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9))),
        latency_slo_ms=50.0,
        origin="aws:us-east-1",
        allowed_regions=("us-east-1",),
        preemptible=True,
        max_hourly_cost=20.0,
    )
    data = spec_to_dict(original)
    back = spec_from_dict(data)
    assert back.deadline is not None and back.deadline.utcoffset() == timedelta(0)
    assert back.deadline == original.deadline  # same instant
    assert back == spec_from_dict(spec_to_dict(back))
    assert back.resources == original.resources and back.allowed_regions == ("us-east-1",)


def test_sites_whose_connector_lacks_an_ability_are_rejected_with_it() -> None:
    no_dispatch = replace(site("cloud"), lacks=frozenset({Ability.DISPATCH}))
    no_gang = replace(site("k8s"), lacks=frozenset({Ability.GANG}))
    full = site("full")
    sites = (no_dispatch, no_gang, full)
    pools = [pool(s.name) for s in sites]
    gang = spec(resources=Resources(gpus=8, nodes=2))
    ev = evaluate(gang, pools=pools, conditions=conds(*sites), weights=EVEN)
    details = {r.site: (r.reason, r.detail) for r in ev.rejections}
    assert details == {
        "cloud": (RejectReason.ABILITY, "the site's connector lacks dispatch"),
        "k8s": (RejectReason.ABILITY, "the site's connector lacks gang"),
    }
    single = evaluate(spec(), pools=pools, conditions=conds(*sites), weights=EVEN)
    assert {c.site for c in single.candidates} == {"k8s", "full"}
