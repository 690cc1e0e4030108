"""The packing term: scarcity of pinned models and fragments, from the queue and the ledger."""

from __future__ import annotations

from dataclasses import replace

import pytest

from broker.domain.engine import Engine, EngineSettings, Place
from broker.domain.enums import Tier
from broker.domain.latency import LatencyMatrix
from broker.domain.nodes import Demand, NodeUse
from broker.domain.objective import Weights
from broker.domain.packing import NO_OUTLOOK, Outlook, fragmentation
from tests.domain.test_engine import FLAT, NOW, job, plan, pool, site

COST = {t: Weights(cost=1.0, latency=0.0, carbon=0.0) for t in Tier}
ON = EngineSettings(weights=COST, deferral=False, packing_weight=0.5)
OFF = replace(ON, packing_weight=0.0)


def test_scarcity_is_pinned_demand_over_free_gpus_and_large_share_counts_big_jobs() -> None:
    pools = [pool(model="H100", nodes=1, per_node=8), pool(model="A100", nodes=2, per_node=8)]
    queue = [
        job("pinned", gpus=4, models=("H100",)).spec,  # 4 of the 8 free H100s
        job("either", gpus=8, models=("H100", "A100")).spec,  # accepts every model: not pinned
        job("small", gpus=1, models=()).spec,
    ]
    outlook = Outlook.of(queue, pools)
    assert outlook.scarcity == {"H100": 0.5}
    assert outlook.large_share == pytest.approx(12 / 13)  # the 4- and 8-GPU jobs
    assert outlook.term("H100", 1.0) == pytest.approx((0.5 + 12 / 13) / 2)
    assert outlook.term("A100", 0.0) == 0.0
    assert Outlook.of([], pools) == NO_OUTLOOK


def test_fragmentation_levels() -> None:
    empty, half = NodeUse.empty(4), NodeUse((1000, 1000, 0, 0))
    share = NodeUse((600, 0, 0, 0))
    two, quarter = Demand(2000), Demand(250)
    assert fragmentation([empty, half], two) == 0.0  # fits where work runs
    assert fragmentation([empty, half], Demand(3000)) == 1.0  # must open the empty node
    assert fragmentation([empty, share], quarter) == 0.0  # a partly used GPU holds it
    assert fragmentation([empty, half], quarter) == 0.5  # an empty GPU of a used node
    assert fragmentation([empty], quarter) == 1.0
    # a node whose CPU only is in use counts as used: opening it breaks no empty node
    assert fragmentation([NodeUse((0, 0), 4000)], two) == 0.0


def test_work_that_could_run_anywhere_keeps_off_the_model_pinned_work_waits_for() -> None:
    # H100 a little cheaper: with the term off the flexible job takes it (a dear third pool
    # keeps the cost terms of the two close: min-max over all three)
    h100 = pool(model="H100", nodes=1, price=1.9)
    a100 = replace(pool(model="A100", nodes=1, price=2.0), gpu_memory_gb=80)
    t4 = pool(model="T4", nodes=1, price=4.0)
    pools = [h100, a100, t4]
    sites = [site()]
    flexible = job("flex", gpus=8, models=(), created=job("x").created_at)
    pinned = [job(f"pin{i}", gpus=8, models=("H100",), tier=Tier.P3) for i in range(2)]
    waiting = [flexible.spec, *(j.spec for j in pinned)]
    for settings, model in ((OFF, "H100"), (ON, "A100")):
        (d,) = plan(settings, queue=[flexible], pools=pools, sites=sites, waiting=waiting)
        assert isinstance(d, Place)
        assert d.candidate.gpu_model == model
    # A100: no scarcity, an empty node opened while large jobs wait: (0 + 1 x 1) / 2
    assert d.candidate.packing_term == pytest.approx(0.5)


def test_a_small_job_fills_a_used_node_rather_than_break_an_empty_one_a_big_job_needs() -> None:
    # two pools of one model; the empty one is a little cheaper, the other has a node in
    # use (a dear third pool keeps their cost terms close)
    empty = pool(site_name="a", nodes=1, price=1.0)
    used = replace(
        pool(site_name="b", nodes=1, price=1.05), node_use=(NodeUse((1000,) * 4 + (0,) * 4),)
    )
    dear = pool(site_name="c", nodes=1, price=2.0)
    pools = [empty, used, dear]
    sites = [site("a"), site("b"), site("c")]
    small = job("small", gpus=1)
    big = job("big", gpus=8, tier=Tier.P3)
    waiting = [small.spec, big.spec]
    for settings, where in ((OFF, "a"), (ON, "b")):
        (d,) = plan(settings, queue=[small], pools=pools, sites=sites, waiting=waiting)
        assert isinstance(d, Place)
        assert d.candidate.site == where
    # with no large job queued nothing is broken by opening the empty node: cost wins
    (d,) = plan(ON, queue=[small], pools=pools, sites=sites, waiting=[small.spec])
    assert isinstance(d, Place) and d.candidate.site == "a"


def test_explain_gives_each_pool_the_term_a_pass_adds() -> None:
    used = replace(pool(site_name="b", nodes=1), node_use=(NodeUse((1000,) + (0,) * 7),))
    empty = pool(site_name="a", nodes=1)
    small, big = job("small", gpus=1), job("big", gpus=8)
    outlook = Outlook.of([small.spec, big.spec], [empty, used])
    assert outlook.scarcity == {}  # one model in the fleet: nobody is pinned away from others
    sites = [site("a"), site("b")]
    engine = Engine(ON)
    conds = engine.conditions(
        small.spec, sites=sites, latency=LatencyMatrix({}), carbon=FLAT, now=NOW
    )
    ev = engine.evaluate(small.spec, pools=[empty, used], conditions=conds, packing=outlook)
    terms = {c.site: c.packing_term for c in ev.candidates}
    assert terms == {"a": pytest.approx(outlook.large_share / 2), "b": 0.0}
    assert ev.best is not None and ev.best.site == "b"
