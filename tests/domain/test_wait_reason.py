"""A Wait's reason from the index's masks against the explaining `evaluate` it replaces.

The engine used to say why a job waits by running `placement.evaluate(explain=True)` and
keeping only the set of rejection reasons; `FleetIndex.wait_reasons` gets that set from the
rule masks and the capacity array. On random fleets and jobs (some waiting for capacity,
some for a rule, some, with the performance model on, for the deadline) the text must be
the same, and a whole pass must decide the same.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest

from broker.domain.engine import Engine, EngineSettings, Wait, wait_text
from broker.domain.enums import JobKind, JobState
from broker.domain.fleet_index import FleetIndex
from broker.domain.jobs import Job, JobSpec
from broker.domain.latency import LatencyMatrix
from broker.domain.placement import Evaluation
from broker.domain.ranking import Shape
from broker.domain.rules import RejectReason
from tests.domain.test_ranking import NOW, PERFORMANCE, SETTINGS, Series, fleet, job_spec


def reference_text(ev: Evaluation) -> str:
    """The engine's `_wait_reason` before `FleetIndex.wait_reasons`, verbatim."""
    if not ev.rejections:
        return "no site offers a matching pool"
    reasons = sorted({r.reason.value for r in ev.rejections})
    return "no pool can take it now (" + ", ".join(reasons) + ")"


def reference_evaluation(
    engine: Engine,
    spec: JobSpec,
    index: FleetIndex,
    *,
    latency: LatencyMatrix,
    carbon: Series,
) -> Evaluation:
    conds = engine.conditions(spec, sites=index.sites, latency=latency, carbon=carbon, now=NOW)
    return engine.evaluate(spec, pools=index.pools, conditions=conds, explain=True, now=NOW)


class ReferenceEngine(Engine):
    """The engine with the old, explaining wait reason."""

    def __init__(self, settings: EngineSettings, *, latency: LatencyMatrix, carbon: Series) -> None:
        super().__init__(settings)
        self._latency = latency
        self._carbon = carbon

    def wait_reason(self, spec: JobSpec, index: FleetIndex, shape: Shape) -> str:
        ev = reference_evaluation(self, spec, index, latency=self._latency, carbon=self._carbon)
        return reference_text(ev)


def random_spec(rng: random.Random, *, on: bool) -> JobSpec:
    spec = job_spec(rng)
    if on:  # runs differ in length by model, so a deadline may rule slow pools out
        spec = replace(
            spec,
            kind=rng.choice((JobKind.TRAINING, JobKind.INFERENCE)),
            reference_gpu_model=rng.choice((None, "H100", "L4")),
        )
    if rng.random() < 0.3:  # a tight deadline: only the faster models meet it
        spec = replace(
            spec, deadline=NOW + timedelta(seconds=spec.estimated_duration_s * rng.uniform(1, 3))
        )
    if rng.random() < 0.2:  # shapes that differ only in CPU and memory
        spec = replace(
            spec,
            resources=replace(
                spec.resources, cpu=rng.choice((2.0, 128.0)), memory_gb=rng.choice((16.0, 2048.0))
            ),
        )
    return spec


def compare(seed: int, *, on: bool) -> Counter[RejectReason]:
    """Asks both ways why each of 60 random jobs cannot be placed (placing those that can,
    so later ones wait for capacity); the reasons of the jobs that would wait."""
    rng = random.Random(5000 + seed)
    sites, pools, latency = fleet(rng)
    carbon = Series(rng)
    engine = Engine(PERFORMANCE if on else SETTINGS)
    index = engine.fleet_index(
        pools=pools, sites=sites, latency=latency, carbon=carbon, now=NOW, longest_s=36000
    )
    waited: Counter[RejectReason] = Counter()
    for _ in range(60):
        spec = random_spec(rng, on=on)
        shape = index.shape(spec)
        ev = reference_evaluation(engine, spec, index, latency=latency, carbon=carbon)
        assert wait_text(index.wait_reasons(spec, shape)) == reference_text(ev)
        ranking = index.rank(spec, shape, engine.weights_for(spec), SETTINGS.gpu_utilisation)
        pick = index.pick(spec, ranking)
        if pick is None:
            waited.update({r.reason for r in ev.rejections})
        else:
            index.allocate(pick.pool, pick.nodes, spec.resources.demand)
    return waited


@pytest.mark.parametrize("on", [False, True], ids=["model-off", "model-on"])
@pytest.mark.parametrize("seed", range(60))
def test_wait_reasons_are_those_evaluate_explains(seed: int, on: bool) -> None:
    compare(seed, on=on)


def test_the_random_jobs_wait_for_each_kind_of_reason() -> None:
    """Jobs wait for capacity, for a rule (CPU among others) and, with the performance
    model on, for the deadline."""
    off = sum((compare(seed, on=False) for seed in range(60)), Counter[RejectReason]())
    on = sum((compare(seed, on=True) for seed in range(60)), Counter[RejectReason]())
    assert off[RejectReason.CAPACITY] and off[RejectReason.CPU] and off[RejectReason.MEMORY]
    assert on[RejectReason.DEADLINE] and on[RejectReason.GPU_PERFORMANCE]


@pytest.mark.parametrize("on", [False, True], ids=["model-off", "model-on"])
@pytest.mark.parametrize("seed", range(20))
def test_a_pass_decides_as_with_the_explaining_reason(seed: int, on: bool) -> None:
    rng = random.Random(9000 + seed)
    sites, pools, latency = fleet(rng)
    carbon = Series(rng)
    settings = PERFORMANCE if on else SETTINGS
    queue = [
        Job(
            id=f"j{k}",
            tenant=rng.choice(("a", "b")),
            spec=random_spec(rng, on=on),
            state=JobState.PENDING,
            created_at=NOW - timedelta(minutes=k),
            updated_at=NOW,
        )
        for k in range(80)
    ]

    def plan(engine: Engine) -> list[object]:
        return list(
            engine.plan(
                queue=queue,
                pools=pools,
                running=[],
                sites=sites,
                latency=latency,
                carbon=carbon,
                now=NOW,
            )
        )

    fast = plan(Engine(settings))
    slow = plan(ReferenceEngine(settings, latency=latency, carbon=carbon))
    assert fast == slow
    assert any(isinstance(d, Wait) for d in fast)
