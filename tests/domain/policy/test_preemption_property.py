"""Randomised checks of choose_victims against brute force on small pools.

The test re-states the eligibility rules itself rather than calling `is_eligible`, so a
bug in the rules shows up here too.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from datetime import timedelta

import pytest

from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.nodes import Demand, fits
from broker.domain.policy.preemption import choose_victims
from broker.domain.work import RunningWork
from tests.domain.policy.builders import NOW, placed, pool

MIN_RUNTIME_S = 600.0
TENANTS = ("a", "b")


def random_case(rng: random.Random) -> tuple[GpuPool, list[RunningWork]]:
    """A pool of 1-3 nodes of 2 or 4 GPUs, filled with up to 7 random jobs (some gangs)."""
    nodes, per_node = rng.choice((1, 2, 2, 3, 3)), rng.choice((2, 4))
    filled = pool(nodes=nodes, per_node=per_node)
    size = filled.size
    running: list[RunningWork] = []
    for n in range(rng.randint(0, 7)):
        milli = rng.choice((300, 500, 700, 1000, 2000))
        span = rng.randint(1, min(2, nodes))
        use = filled.uses()
        roomy = [i for i in range(nodes) if fits(use[i], Demand(milli), size)]
        if len(roomy) < span:
            continue
        where = tuple(sorted(rng.sample(roomy, span)))
        gpus = filled.gpus_on(where, Demand(milli))
        filled = filled.allocate(where, Demand(milli), gpus)
        started = rng.choice((None, 1.0, 5.0, 30.0, 120.0, 600.0))
        running.append(
            RunningWork(
                job_id=f"j{n}",
                tenant=rng.choice(TENANTS),
                tier=rng.choice(tuple(Tier)),
                preemptible=rng.random() < 0.8,
                pool_id="p",
                node_indices=where,
                node_gpus=gpus,
                milli_per_node=milli,
                gpu_model="H100",
                started_at=None if started is None else NOW - timedelta(minutes=started),
                placed_at=NOW - timedelta(hours=11),
                borrowed=rng.random() < 0.3,
            )
        )
    assert filled == placed(running, nodes=nodes, per_node=per_node)[0]
    return filled, running


def eligible(w: RunningWork, *, tier: Tier, owner: str | None) -> bool:
    lower = w.tier.rank > tier.rank
    reclaim = owner is not None and w.borrowed and w.tenant != owner
    young = w.started_at is not None and (NOW - w.started_at).total_seconds() < MIN_RUNTIME_S
    return w.preemptible and (lower or reclaim) and not young


def fits_without(
    p: GpuPool, victims: Sequence[RunningWork], *, milli: int, count: int
) -> tuple[int, ...] | None:
    freed = p
    for w in victims:
        freed = freed.release(w.node_indices, w.gpus(), w.demand)
    return freed.fit(Demand(milli), count=count)


def brute_force(
    p: GpuPool, candidates: Sequence[RunningWork], *, milli: int, count: int
) -> tuple[int, float] | None:
    """The smallest feasible victim count and, at that count, the least GPU-seconds lost."""
    for size in range(len(candidates) + 1):
        lost = [
            sum(w.gpu_seconds_run(NOW) for w in combo)
            for combo in itertools.combinations(candidates, size)
            if fits_without(p, combo, milli=milli, count=count) is not None
        ]
        if lost:
            return size, min(lost)
    return None


@pytest.mark.parametrize("seed", range(4))
def test_victims_always_make_room_and_are_minimal_where_claimed(seed: int) -> None:
    rng = random.Random(20250301 + seed)
    outcomes = {"none": 0, "exact": 0, "heuristic": 0}
    for _ in range(150):
        p, running = random_case(rng)
        tier = rng.choice(tuple(Tier))
        owner = rng.choice((None, *TENANTS))
        count = rng.randint(1, p.nodes)
        milli = rng.choice((500, 1000, 2000, p.node_capacity_milli))
        found = choose_victims(
            demand=Demand(milli),
            need_nodes=count,
            pool=p,
            running=running,
            tier=tier,
            now=NOW,
            min_runtime_s=MIN_RUNTIME_S,
            owner_tenant=owner,
        )
        candidates = [w for w in running if eligible(w, tier=tier, owner=owner)]
        best = brute_force(p, candidates, milli=milli, count=count)
        if found is None:
            assert best is None, (running, tier, owner, milli, count)
            outcomes["none"] += 1
            continue
        assert best is not None
        by_id = {w.job_id: w for w in running}
        victims = [by_id[j] for j in found.job_ids]
        assert all(eligible(w, tier=tier, owner=owner) for w in victims)
        assert fits_without(p, victims, milli=milli, count=count) == found.nodes
        assert found.gpu_seconds_lost == pytest.approx(sum(w.gpu_seconds_run(NOW) for w in victims))
        for w in victims:  # no victim can be spared
            rest = [v for v in victims if v is not w]
            assert fits_without(p, rest, milli=milli, count=count) is None
        if count == 1 or all(len(w.node_indices) == 1 for w in candidates):
            assert (len(victims), found.gpu_seconds_lost) == pytest.approx(best)
            outcomes["exact"] += 1
        else:
            assert len(victims) >= best[0]
            outcomes["heuristic"] += 1
    # the generator must exercise every branch, or the test proves little
    assert min(outcomes.values()) > 5, outcomes
