"""Victim choice for preemption: hand-checkable scenarios for each rule."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from broker.domain.enums import Tier
from broker.domain.nodes import Demand
from broker.domain.policy.preemption import VictimSet, best_preemption, choose_victims
from broker.domain.work import RunningWork
from tests.domain.policy.builders import NOW, placed, pool, work

HOUR = 3600.0


def choose(
    running: Sequence[RunningWork],
    *,
    need_gpus: float,
    need_nodes: int = 1,
    nodes: int = 1,
    tier: Tier = Tier.P1,
    min_runtime_s: float = 0.0,
    owner_tenant: str | None = None,
) -> VictimSet | None:
    p, running = placed(running, nodes=nodes)
    return choose_victims(
        demand=Demand(round(need_gpus * 1000)),
        need_nodes=need_nodes,
        pool=p,
        running=running,
        tier=tier,
        now=NOW,
        min_runtime_s=min_runtime_s,
        owner_tenant=owner_tenant,
    )


def test_one_big_victim_beats_two_small_ones_even_losing_more_work() -> None:
    running = [
        work("big", gpus=4, hours_ago=10),  # 40 GPU-hours lost
        work("small-1", gpus=2, hours_ago=0.5),
        work("small-2", gpus=2, hours_ago=0.5),
    ]
    found = choose(running, need_gpus=4)
    assert found is not None
    assert found.job_ids == ("big",)
    assert found.gpu_seconds_lost == pytest.approx(40 * HOUR)
    assert found.nodes == (0,)
    assert "big" in found.reason
    assert "P1" in found.reason


def test_equal_victim_count_loses_least_work() -> None:
    running = [work("older", gpus=4, hours_ago=2), work("newer", gpus=4, hours_ago=1)]
    found = choose(running, need_gpus=4)
    assert found is not None
    assert found.job_ids == ("newer",)
    assert found.gpu_seconds_lost == pytest.approx(4 * HOUR)


def test_equal_count_and_work_prefers_the_lower_tier_then_the_job_id() -> None:
    running = [
        work("a-p2", gpus=4, tier=Tier.P2, hours_ago=1),
        work("b-p3", gpus=4, tier=Tier.P3, hours_ago=1),
    ]
    found = choose(running, need_gpus=4)
    assert found is not None
    assert found.job_ids == ("b-p3",)

    twins = [work("b", gpus=4, hours_ago=1), work("a", gpus=4, hours_ago=1)]
    found = choose(twins, need_gpus=4)
    assert found is not None
    assert found.job_ids == ("a",)


def test_only_the_missing_room_is_freed() -> None:
    # 6 of 8 GPUs in use, 2 free: a 4-GPU job needs 2 more, which "one" alone cannot free.
    running = [
        work("three", gpus=3, hours_ago=4),  # 12 GPU-hours
        work("two", gpus=2, hours_ago=3),  # 6 GPU-hours
        work("one", gpus=1, hours_ago=0.1),
    ]
    found = choose(running, need_gpus=4)
    assert found is not None
    assert found.job_ids == ("two",)
    assert found.gpu_seconds_lost == pytest.approx(6 * HOUR)


def test_fits_already_means_no_victims() -> None:
    found = choose([work("x", gpus=4)], need_gpus=4)
    assert found == VictimSet(
        job_ids=(),
        nodes=(0,),
        gpu_seconds_lost=0.0,
        reason="the P1 job fits on 1 node(s) of p (4 GPUs each) without preempting anything",
    )


def test_gang_takes_the_two_cheapest_nodes() -> None:
    running = [
        work("n0", nodes=(0,), gpus=8, hours_ago=3),
        work("n1", nodes=(1,), gpus=8, hours_ago=1),
        work("n2", nodes=(2,), gpus=8, hours_ago=2),
    ]
    found = choose(running, need_gpus=8, need_nodes=2, nodes=3)
    assert found is not None
    assert found.job_ids == ("n1", "n2")
    assert found.nodes == (1, 2)
    assert found.gpu_seconds_lost == pytest.approx((8 + 16) * HOUR)


def test_gang_uses_a_free_node_and_frees_one_more() -> None:
    running = [work("n0", nodes=(0,), gpus=6, hours_ago=1)]
    found = choose(running, need_gpus=4, need_nodes=2, nodes=2)
    assert found is not None
    assert found.job_ids == ("n0",)
    assert found.nodes == (0, 1)


def test_one_gang_victim_freeing_two_nodes_beats_two_cheaper_single_victims() -> None:
    running = [
        work("gang", nodes=(0, 1), gpus=4, hours_ago=1),  # 8 GPU-hours lost
        work("h", nodes=(0,), gpus=4, hours_ago=0.5),  # 2 GPU-hours
        work("pinned", nodes=(1,), gpus=4, tier=Tier.P2, preemptible=False),
        work("l", nodes=(2,), gpus=8, hours_ago=0.1),  # 0.8 GPU-hours
    ]
    found = choose(running, need_gpus=4, need_nodes=2, nodes=3)
    assert found is not None
    assert found.job_ids == ("gang",)
    assert found.nodes == (0, 1)


def test_gang_job_needs_all_nodes_at_once_or_nothing() -> None:
    running = [
        work("n0", nodes=(0,), gpus=8),
        work("pinned", nodes=(1,), gpus=8, preemptible=False),
    ]
    assert choose(running, need_gpus=8, need_nodes=2, nodes=2) is None


def test_non_preemptible_work_is_never_chosen() -> None:
    running = [
        work("pinned", nodes=(0,), gpus=8, preemptible=False, hours_ago=0.1),
        work("costly", nodes=(1,), gpus=8, hours_ago=100),
    ]
    found = choose(running, need_gpus=8, nodes=2)
    assert found is not None
    assert found.job_ids == ("costly",)
    assert choose(running[:1], need_gpus=8) is None


@pytest.mark.parametrize(
    ("incoming", "victim_tier", "chosen"),
    [
        (Tier.P1, Tier.P2, True),
        (Tier.P1, Tier.P3, True),
        (Tier.P2, Tier.P3, True),
        (Tier.P2, Tier.P2, False),
        (Tier.P2, Tier.P1, False),
        (Tier.P3, Tier.P3, False),
        (Tier.P1, Tier.P1, False),
    ],
)
def test_only_strictly_lower_tiers_are_victims(
    incoming: Tier, victim_tier: Tier, chosen: bool
) -> None:
    running = [work("v", gpus=8, tier=victim_tier)]
    found = choose(running, need_gpus=8, tier=incoming)
    assert (found is not None) is chosen


def test_minimum_runtime_protects_fresh_work() -> None:
    fresh = [work("fresh", gpus=8, hours_ago=5 / 60)]  # started 5 minutes ago
    assert choose(fresh, need_gpus=8, min_runtime_s=600) is None
    ten_minutes = [work("ten", gpus=8, hours_ago=10 / 60)]
    found = choose(ten_minutes, need_gpus=8, min_runtime_s=600)
    assert found is not None
    assert found.job_ids == ("ten",)


def test_work_not_yet_started_is_not_protected_and_loses_nothing() -> None:
    running = [
        work("waiting", nodes=(0,), gpus=8, hours_ago=None),
        work("running", nodes=(1,), gpus=8, hours_ago=1),
    ]
    found = choose(running, need_gpus=8, nodes=2, min_runtime_s=10 * HOUR)
    assert found is not None
    assert found.job_ids == ("waiting",)
    assert found.gpu_seconds_lost == 0.0
    assert found.nodes == (0,)


def test_nothing_possible_returns_none() -> None:
    running = [work("a", gpus=4), work("b", gpus=4, tier=Tier.P1, preemptible=False)]
    assert choose(running, need_gpus=8) is None  # b holds half the only node
    assert choose([], need_gpus=9) is None  # more than a node holds
    assert choose([], need_gpus=1, need_nodes=2) is None  # more nodes than the pool has


def test_work_on_other_pools_is_ignored() -> None:
    elsewhere = work("elsewhere", gpus=8, pool_id="other")
    here = work("here", gpus=8, hours_ago=50)
    found = choose_victims(
        demand=Demand(8000),
        need_nodes=1,
        pool=pool([here]),
        running=[elsewhere, here],
        tier=Tier.P1,
        now=NOW,
        min_runtime_s=0,
    )
    assert found is not None
    assert found.job_ids == ("here",)


def test_owner_reclaims_borrowed_work_of_another_tenant_whatever_its_tier() -> None:
    running = [work("lent", gpus=8, tier=Tier.P1, tenant="b", borrowed=True)]
    assert choose(running, need_gpus=8, tier=Tier.P2) is None  # not a reclaim: P1 outranks P2
    found = choose(running, need_gpus=8, tier=Tier.P2, owner_tenant="a")
    assert found is not None
    assert found.job_ids == ("lent",)
    assert "reclaiming its borrowed quota" in found.reason


def test_owner_does_not_reclaim_its_own_or_unborrowed_or_protected_work() -> None:
    own = [work("own", gpus=8, tier=Tier.P2, tenant="a", borrowed=True)]
    assert choose(own, need_gpus=8, tier=Tier.P2, owner_tenant="a") is None
    lent_in_quota = [work("quota", gpus=8, tier=Tier.P2, tenant="b")]
    assert choose(lent_in_quota, need_gpus=8, tier=Tier.P2, owner_tenant="a") is None
    fresh = [work("fresh", gpus=8, tier=Tier.P2, tenant="b", borrowed=True, hours_ago=0.01)]
    assert choose(fresh, need_gpus=8, tier=Tier.P2, owner_tenant="a", min_runtime_s=600) is None


def test_best_preemption_prefers_fewest_victims_then_least_work_lost() -> None:
    two = [work("a1", gpus=4, pool_id="two"), work("a2", gpus=4, pool_id="two")]
    one_costly = [work("b", gpus=8, pool_id="one-costly", hours_ago=9)]
    one_cheap = [work("c", gpus=8, pool_id="one-cheap", hours_ago=2)]
    running_by_pool = {"two": two, "one-costly": one_costly, "one-cheap": one_cheap}
    built = {pid: placed(rs, pool_id=pid) for pid, rs in running_by_pool.items()}
    pools = [p for p, _ in built.values()]
    running_by_pool = {pid: rs for pid, (_, rs) in built.items()}

    def best(candidates: Sequence[str]) -> tuple[str, tuple[str, ...]] | None:
        found = best_preemption(
            demand=Demand(8000),
            need_nodes=1,
            pools=[p for p in pools if p.id in candidates],
            running_by_pool=running_by_pool,
            tier=Tier.P1,
            now=NOW,
            min_runtime_s=0,
        )
        return None if found is None else (found[0].id, found[1].job_ids)

    assert best(["two", "one-costly", "one-cheap"]) == ("one-cheap", ("c",))
    assert best(["two", "one-costly"]) == ("one-costly", ("b",))
    assert best(["two"]) == ("two", ("a1", "a2"))
    assert best([]) is None


def test_best_preemption_skips_pools_without_a_way() -> None:
    pinned = [work("pinned", gpus=8, pool_id="x", preemptible=False)]
    found = best_preemption(
        demand=Demand(8000),
        need_nodes=1,
        pools=[pool(pinned, pool_id="x"), pool(pool_id="empty-but-unknown")],
        running_by_pool={"x": pinned},  # no entry for the empty pool: nothing runs there
        tier=Tier.P1,
        now=NOW,
        min_runtime_s=0,
    )
    assert found is not None
    assert found[0].id == "empty-but-unknown"
    assert found[1].job_ids == ()
