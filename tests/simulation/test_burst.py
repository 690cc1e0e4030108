"""Bursting in the replay: the live planner and idle review in virtual time, hand-checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst.settings import BurstSettings
from broker.cli.main import main
from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.scheduling.conditions import HourlyTable
from broker.simulation.burst import BurstOptions, CloudBurst, burst_sites, elastic
from broker.simulation.report import summarize
from broker.simulation.runs import Outcome
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob, write_trace

T0 = datetime(2022, 3, 7, tzinfo=UTC)
PRICE = 4.0  # USD per H100-hour in the cloud: 32 per 8-GPU instance-hour
HOURS = 48


def site(name: str, *, private: bool) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region=name,
        location=f"x:{name}",
        grid_zone="Z",
        private=private,
        pue=1.0,
    )


def pool(site_name: str, *, nodes: int, price: float) -> GpuPool:
    return GpuPool(
        id=f"{site_name}/H100",
        site=site_name,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=nodes,
        price_on_demand=price,
    )


SITES = [site("priv", private=True), site("cloud", private=False)]
POOLS = [pool("priv", nodes=1, price=1.0), pool("cloud", nodes=2, price=PRICE)]
ORACLE = HourlyTable({"Z": [(T0 + timedelta(hours=i), 100.0) for i in range(HOURS)]})
SETTINGS = BurstSettings(
    enabled=True, wait_target_s={Tier.P1: 60.0, Tier.P2: 600.0}, idle_ttl_s=1800.0
)


def job(job_id: str, *, tier: Tier = Tier.P2, submit_s: float = 0, hours: float = 1) -> TraceJob:
    kind = JobKind.INFERENCE if tier is Tier.P1 else JobKind.TRAINING
    return TraceJob(
        job_id=job_id,
        submit_s=submit_s,
        duration_s=int(hours * 3600),
        gpus=8,
        gpu_fraction=None,
        nodes=1,
        gpu_models=("H100",),
        tier=tier,
        tenant="t",
        deadline_s=None,
        origin=None,
        preemptible=False,
        kind=kind,
    )


def engine() -> Engine:
    w = Weights(cost=0.0, latency=0.0, carbon=1.0)
    return Engine(EngineSettings(weights={t: w for t in Tier}, deferral=False))


def replay(trace: list[TraceJob], *, burst: bool) -> tuple[Outcome, CloudBurst | None]:
    eng = engine()
    sites = burst_sites(SITES, SETTINGS)
    cloud = None
    if burst:
        cloud = CloudBurst(
            options=BurstOptions(settings=SETTINGS, sites=sites, boot_delay_s=300.0),
            limits=POOLS,
            sites=SITES,
            engine=eng,
            latency=LatencyMatrix({}),
            carbon=ORACLE,
        )
    sim = Simulation(
        trace=trace,
        sites=SITES,
        pools=elastic(POOLS, sites=sites),
        latency=LatencyMatrix({}),
        carbon=ORACLE,
        engine=eng,
        start=T0,
        policy="broker",
        burst=cloud,
    )
    return sim.run(), cloud


def waits(outcome: Outcome) -> dict[str, float]:
    return {
        sj.job.id: (sj.first_start - sj.job.created_at).total_seconds()
        for sj in outcome.jobs
        if sj.first_start is not None
    }


def test_one_instance_costs_boot_run_and_ttl_and_idles_exactly_the_ttl() -> None:
    # "a" holds the private node for 4 h; "b" waits its 600 s target, the pass at 600 s
    # starts one instance, it joins at 900 s, "b" runs 1 h on it, and the review
    # releases it 1800 s (the TTL) after "b" ended: alive 600 s .. 6300 s.
    trace = [job("a", hours=4), job("b")]
    outcome, cloud = replay(trace, burst=True)
    assert cloud is not None
    assert waits(outcome) == {"a": 0.0, "b": 900.0}
    (inst,) = cloud.instances.values()
    assert inst.record.launched_at == T0 + timedelta(seconds=600)
    assert inst.record.joined_at == T0 + timedelta(seconds=900)
    assert inst.record.released_at == T0 + timedelta(seconds=4500 + 1800)
    s = cloud.summary(end=outcome.end)
    per_hour = 8 * PRICE
    assert s["instances_started"] == 1 and s["instances_alive_at_end"] == 0
    assert s["cloud_spend_usd"] == pytest.approx(round(per_hour * 5700 / 3600, 2))
    assert s["boot_spend_usd"] == pytest.approx(round(per_hour * 300 / 3600, 2))
    assert s["idle_spend_usd"] == pytest.approx(per_hour * 1800 / 3600)
    assert s["idle_held_by_node_order_usd"] == 0
    # the makespan ends with the last job, not with the last release
    assert outcome.end == T0 + timedelta(hours=4)
    assert cloud.nodes["cloud/H100"] == []  # its node left the pool


def test_an_idle_node_before_a_busy_one_is_held_until_that_one_is_idle() -> None:
    # "b" bursts at 600 s (node 0, joins 900 s, runs to 4500 s); "c" bursts at 900 s
    # (node 1, joins 1200 s, runs to 12000 s). Node 0's TTL ends at 6300 s, but releasing it
    # would shift node 1 under running work, so the review holds it until 12000 s.
    trace = [job("a", hours=10), job("b"), job("c", submit_s=60, hours=3)]
    outcome, cloud = replay(trace, burst=True)
    assert cloud is not None
    assert waits(outcome) == {"a": 0.0, "b": 900.0, "c": 1140.0}
    first, second = sorted(cloud.instances.values(), key=lambda i: i.record.launched_at)
    assert first.record.released_at == T0 + timedelta(seconds=12000)
    assert second.record.released_at == T0 + timedelta(seconds=12000 + 1800)
    s = cloud.summary(end=outcome.end)
    per_hour = 8 * PRICE
    assert s["idle_spend_usd"] == round(per_hour * (7500 + 1800) / 3600, 2)
    assert s["idle_held_by_node_order_usd"] == round(per_hour * (12000 - 6300) / 3600, 2)


def test_without_bursting_the_job_waits_for_the_private_node_and_nothing_is_spent() -> None:
    outcome, _ = replay([job("a", hours=4), job("b")], burst=False)
    assert waits(outcome) == {"a": 0.0, "b": 4 * 3600.0}
    s = summarize(outcome, carbon=ORACLE, utilisation=0.8)
    assert "cloud" not in s["by_site"]


def test_a_peak_bursts_p1_and_p2_waits_down_and_releases_everything() -> None:
    # the private node is busy for 6 h; three P2 and two P1 jobs arrive in the first hour
    trace = [job("base", hours=6)]
    trace += [job(f"p2-{i}", submit_s=600 * i, hours=2) for i in range(3)]
    trace += [job(f"p1-{i}", tier=Tier.P1, submit_s=900 + 600 * i, hours=0.5) for i in range(2)]
    with_burst, cloud = replay(trace, burst=True)
    without, _ = replay(trace, burst=False)
    on, off = (
        summarize(o, carbon=ORACLE, utilisation=0.8)["wait_s"] for o in (with_burst, without)
    )
    for tier in ("P1", "P2"):
        assert on[tier]["mean"] < off[tier]["mean"]
        assert on[tier]["max"] < off[tier]["max"]
    assert cloud is not None
    s = cloud.summary(end=with_burst.end)
    assert s["instances_started"] >= 2
    assert s["instances_alive_at_end"] == 0 and not any(cloud.nodes.values())
    assert s["peak_instances"] <= 2  # the cloud pool's limit
    assert 0 < s["idle_spend_usd"] < s["cloud_spend_usd"]
    assert all(sj.finish is not None for sj in with_burst.jobs)


def test_broker_simulate_all_writes_both_figures(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.csv"
    write_trace(trace_path, [job("a", hours=4), job("b"), job("c", tier=Tier.P1, submit_s=60)])
    repo = Path(__file__).resolve().parents[2]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"latency: {{file: {repo / 'config' / 'latency.csv'}}}\n"
        "burst: {enabled: true, wait_target_s: {P1: 60, P2: 600}, idle_ttl_s: 1800}\n"
        "sites:\n"
        "  - {name: priv, kind: sim, region: r1, location: 'aws:eu-north-1', grid_zone: SE,\n"
        "     private: true,\n"
        "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
        "              price_on_demand: 1.0}]}\n"
        "  - {name: cloud, kind: sim, region: r2, location: 'aws:us-east-1',\n"
        "     grid_zone: US-MIDA-PJM,\n"
        "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 2,\n"
        "              price_on_demand: 4.0}]}\n"
    )
    out = tmp_path / "out"
    args = ["simulate", "--trace", str(trace_path), "--fleet", str(fleet), "--out", str(out)]
    assert main([*args, "--policy", "all", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"broker", "broker-burst", "fifo"}
    comparison = summary["burst"]["comparison"]
    without, with_burst = comparison["without"], comparison["with"]
    assert without["cloud_spend_usd"] == 0 and without["instances_started"] == 0
    assert with_burst["instances_started"] >= 1 and with_burst["instances_alive_at_end"] == 0
    assert with_burst["cloud_spend_usd"] > with_burst["idle_spend_usd"] > 0
    for tier in ("P1", "P2"):
        assert with_burst["wait_s"][tier]["mean"] < without["wait_s"][tier]["mean"]
    assert summary["burst"]["settings"]["sites"] == ["cloud"]
    assert "Bursting" in (out / "report.html").read_text()
