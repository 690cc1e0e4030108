"""The throughput table, and the engine with the performance model on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.objective import Weights
from broker.domain.rules import RejectReason, SiteConditions
from carbon.performance import NoThroughputFigure, WorkloadClass, shipped_table

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
W = Weights(cost=0.2, latency=0.0, carbon=0.8)
ON = EngineSettings(weights=dict.fromkeys(Tier, W), gpu_performance=True)


def test_the_shipped_table_has_measured_inference_figures_and_gaps() -> None:
    table = shipped_table()
    assert table.relative("H100", WorkloadClass.INFERENCE) == pytest.approx(1.922)
    assert table.relative("t4", WorkloadClass.INFERENCE) == pytest.approx(0.115)
    with pytest.raises(NoThroughputFigure, match=r"A10G.*scheduler\.gpu_throughput"):
        table.relative("A10G", WorkloadClass.INFERENCE)
    with pytest.raises(NoThroughputFigure, match="training"):
        table.relative("T4", WorkloadClass.TRAINING)


def test_an_override_wins_and_fills_a_gap() -> None:
    table = shipped_table().with_overrides({"T4": {"training": 0.2}, "H100": {"inference": 2}})
    assert table.relative("T4", WorkloadClass.TRAINING) == 0.2
    assert table.relative("H100", WorkloadClass.INFERENCE) == 2.0
    assert table.run_factor(model="T4", reference="A100-80GB", workload=WorkloadClass.TRAINING) == 5


def site(name: str) -> Site:
    return Site(
        name=name, kind=SiteKind.SIM, region="r", location="aws:a", grid_zone="Z", private=False
    )


def pool(name: str, model: str) -> GpuPool:
    return GpuPool(
        id=f"{name}/{model}",
        site=name,
        gpu_model=model,
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=1,
        price_on_demand=1.0,
    )


def spec(*, deadline: datetime | None = None, kind: JobKind = JobKind.INFERENCE) -> JobSpec:
    return JobSpec(
        name="j",
        tier=Tier.P2,
        kind=kind,
        resources=Resources(gpus=1),
        workload=Workload(image="x"),
        estimated_duration_s=3600,
        reference_gpu_model="H100",
        deadline=deadline,
    )


def conditions(*names: str) -> dict[str, SiteConditions]:
    return {n: SiteConditions(site=site(n), intensity_gco2_per_kwh=100.0) for n in names}


def test_a_one_hour_h100_job_on_a_t4_is_costed_and_emitted_for_its_longer_run() -> None:
    ev = Engine(ON).evaluate(spec(), pools=[pool("a", "T4")], conditions=conditions("a"))
    best = ev.best
    assert best is not None
    hours = 1.922 / 0.115
    assert best.duration_s == pytest.approx(3600 * hours, abs=1)
    assert best.cost_usd == pytest.approx(hours, rel=1e-4)
    assert best.energy_kwh == pytest.approx(0.070 * hours * 0.8 * site("a").pue, rel=1e-4)
    assert best.gco2 == pytest.approx(best.energy_kwh * 100.0)


def test_a_slow_model_that_misses_the_deadline_is_rejected_when_another_meets_it() -> None:
    job = spec(deadline=NOW + timedelta(hours=3))
    pools = [pool("a", "T4"), pool("b", "H100")]
    ev = Engine(ON).evaluate(job, pools=pools, conditions=conditions("a", "b"), now=NOW)
    assert [c.pool_id for c in ev.candidates] == ["b/H100"]
    assert [(r.pool_id, r.reason) for r in ev.rejections] == [("a/T4", RejectReason.DEADLINE)]


def test_a_model_without_a_figure_is_not_placeable_and_the_reason_names_the_fix() -> None:
    job = spec(kind=JobKind.TRAINING)
    ev = Engine(ON).evaluate(job, pools=[pool("a", "T4")], conditions=conditions("a"))
    assert ev.best is None
    (rejection,) = ev.rejections
    assert rejection.reason is RejectReason.GPU_PERFORMANCE
    assert ("scheduler.gpu_throughput" in rejection.detail and "T4" in rejection.detail) or (
        "H100" in rejection.detail
    )
    fixed = EngineSettings(
        weights=ON.weights,
        gpu_performance=True,
        gpu_throughput={"T4": {"training": 0.2}, "H100": {"training": 1.6}},
    )
    assert Engine(fixed).evaluate(job, pools=[pool("a", "T4")], conditions=conditions("a")).best


def test_the_index_agrees_with_evaluate_on_models_of_different_speed() -> None:
    from broker.domain.latency import LatencyMatrix

    class Flat:
        def hourly(
            self, zone: str, *, start: datetime, end: datetime
        ) -> list[tuple[datetime, float]]:
            h = start.replace(minute=0)
            return [(h + timedelta(hours=k), 100.0 + 10 * k) for k in range(80)]

    engine = Engine(ON)
    pools = [pool("a", "T4"), pool("b", "H100"), pool("c", "L4")]
    sites = [site("a"), site("b"), site("c")]
    job = spec()
    index = engine.fleet_index(
        pools=pools, sites=sites, latency=LatencyMatrix({}), carbon=Flat(), now=NOW, longest_s=3600
    )
    ranking = index.rank(job, index.shape(job), W, ON.gpu_utilisation)
    pick = index.pick(job, ranking)
    assert pick is not None
    fast = index.candidate(job, ranking, pick, ON.gpu_utilisation)
    conds = engine.conditions(job, sites=sites, latency=LatencyMatrix({}), carbon=Flat(), now=NOW)
    slow = engine.evaluate(job, pools=pools, conditions=conds, now=NOW).best
    assert slow is not None
    assert (fast.pool_id, fast.duration_s) == (slow.pool_id, slow.duration_s)
    assert fast.gco2 == pytest.approx(slow.gco2) and fast.cost_usd == pytest.approx(slow.cost_usd)
