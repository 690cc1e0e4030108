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
from broker.domain.work import RunningWork, lay_out
from broker.scheduling.conditions import HourlyTable
from broker.simulation.allocation import check_state
from broker.simulation.burst import BurstOptions, CloudBurst, burst_sites, elastic
from broker.simulation.report import summarize
from broker.simulation.runs import Outcome, to_job
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


def replay(
    trace: list[TraceJob], *, burst: bool, pools: list[GpuPool] = POOLS
) -> tuple[Outcome, CloudBurst | None]:
    eng = engine()
    sites = burst_sites(SITES, SETTINGS)
    cloud = None
    if burst:
        cloud = CloudBurst(
            options=BurstOptions(settings=SETTINGS, sites=sites, boot_delay_s=300.0),
            limits=pools,
            sites=SITES,
            engine=eng,
            latency=LatencyMatrix({}),
            carbon=ORACLE,
        )
    sim = Simulation(
        trace=trace,
        sites=SITES,
        pools=elastic(pools, sites=sites),
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
    # the makespan ends with the last job, not with the last release
    assert outcome.end == T0 + timedelta(hours=4)
    assert cloud.nodes["cloud/H100"] == []  # its node left the pool


def test_an_idle_node_before_a_busy_one_goes_at_its_ttl_and_the_work_after_it_moves() -> None:
    # "b" bursts at 600 s (node 0, joins 900 s, runs to 4500 s); "c" bursts at 900 s
    # (node 1, joins 1200 s, runs to 12000 s). Node 0 goes at its TTL (6300 s) although
    # "c" still runs: "c" moves to position 0 and ends there, and the ledger agrees.
    trace = [job("a", hours=10), job("b"), job("c", submit_s=60, hours=3)]
    outcome, cloud = replay(trace, burst=True)
    assert cloud is not None
    assert waits(outcome) == {"a": 0.0, "b": 900.0, "c": 1140.0}
    first, second = sorted(cloud.instances.values(), key=lambda i: i.record.launched_at)
    assert first.record.released_at == T0 + timedelta(seconds=4500 + 1800)
    assert second.record.released_at == T0 + timedelta(seconds=12000 + 1800)
    assert second.busy_s == 3 * 3600  # "c"'s end was booked on its own node
    assert [c.count for c in outcome.checks] == [0, 0]
    s = cloud.summary(end=outcome.end)
    assert s["idle_spend_usd"] == round(8 * PRICE * (1800 + 1800) / 3600, 2)


def test_reclaim_takes_out_a_middle_node_and_moves_the_work_after_it() -> None:
    cloud_pool = pool("cloud", nodes=3, price=PRICE)
    cloud = CloudBurst(
        options=BurstOptions(settings=SETTINGS, sites=frozenset({"cloud"})),
        limits=[cloud_pool],
        sites=SITES,
        engine=engine(),
        latency=LatencyMatrix({}),
        carbon=ORACLE,
    )
    pools = {p.id: p for p in elastic([cloud_pool], sites=frozenset({"cloud"}))}
    waiting = [(to_job(job(j), start=T0), T0) for j in ("b", "c", "d")]
    launched = T0 + timedelta(seconds=600)
    started = cloud.plan(now=launched, pending=waiting, pools=list(pools.values()))
    assert len(started) == 3
    joined = launched + timedelta(seconds=300)
    for inst in started:
        cloud.join(inst.record.instance_id, now=joined, pools=pools)
    first, middle, last = pools[cloud_pool.id].names()
    # whole-node work on nodes 0 and 2; node 1 stays idle
    held = [
        RunningWork(
            job_id=f"on-{k}",
            tenant="t",
            tier=Tier.P2,
            preemptible=False,
            pool_id=cloud_pool.id,
            node_indices=(k,),
            milli_per_node=8000,
            gpu_model="H100",
            started_at=joined,
            placed_at=joined,
        )
        for k in (0, 2)
    ]
    laid, works = lay_out(list(pools.values()), held)
    pools = {p.id: p for p in laid}
    running = {w.job_id: w for w in works}
    for w in works:
        cloud.occupy(w.pool_id, w.node_indices, now=joined, delta=1)

    ttl = timedelta(seconds=SETTINGS.idle_ttl_s)
    assert (
        cloud.reclaim(now=joined + ttl - timedelta(seconds=1), pools=pools, running=running) == []
    )
    released = cloud.reclaim(now=joined + ttl, pools=pools, running=running)
    assert [i.record.instance_id for i in released] == [middle]
    assert pools[cloud_pool.id].names() == (first, last) == tuple(cloud.nodes[cloud_pool.id])
    assert running["on-0"].node_indices == (0,) and running["on-2"].node_indices == (1,)
    after = check_state(at=joined + ttl, label="after", pools=pools, running=running.values())
    assert after.count == 0, after.violations

    # the moved work ends on its own node: the ledger and that node's busy time
    ended = joined + timedelta(hours=2)
    w = running.pop("on-2")
    pools[w.pool_id] = pools[w.pool_id].release(w.node_indices, w.gpus(), w.demand)
    cloud.occupy(w.pool_id, w.node_indices, now=ended, delta=-1)
    assert pools[cloud_pool.id].node_used() == (8000, 0)
    assert cloud.instances[last].busy_s == 7200 and cloud.instances[last].jobs == 0
    assert cloud.instances[first].jobs == 1


def test_a_replay_that_releases_a_middle_node_finishes_every_job_on_its_own_node() -> None:
    # "b" (5 h) runs on node 0, "c" (1 h) and "d" (3 h) on nodes 1 and 2, from 1200 s.
    # Node 1 goes 30 min after "c" ends (6600 s) while nodes 0 and 2 run, and "d" moves
    # to position 1; "e" then bursts the node the pool's limit has room for again.
    trace = [job("a", hours=24), job("b", hours=5)]
    trace += [job("c", submit_s=60, hours=1), job("d", submit_s=60, hours=3)]
    trace += [job("e", submit_s=3 * 3600, hours=1)]
    limits = [pool("priv", nodes=1, price=1.0), pool("cloud", nodes=3, price=PRICE)]
    outcome, cloud = replay(trace, burst=True, pools=limits)
    assert cloud is not None
    runs = {sj.job.id: [(r.start, r.end) for r in sj.runs] for sj in outcome.jobs}
    at = {k: T0 + timedelta(seconds=v) for k, v in (("b", 900), ("c", 1200), ("d", 1200))}
    assert runs["b"] == [(at["b"], at["b"] + timedelta(hours=5))]
    assert runs["c"] == [(at["c"], at["c"] + timedelta(hours=1))]
    assert runs["d"] == [(at["d"], at["d"] + timedelta(hours=3))]
    assert all(sj.finish is not None and sj.preemptions == 0 for sj in outcome.jobs)
    # (launched, joined, released) in seconds, and the busy time booked on each node
    seen = {
        i.record.instance_id: (
            *(
                (t - T0).total_seconds() if t else None
                for t in (i.record.launched_at, i.record.joined_at, i.record.released_at)
            ),
            i.busy_s,
        )
        for i in cloud.instances.values()
    }
    assert seen == {
        "burst-1-0": (600, 900, 18900 + 1800, 5 * 3600),  # "b"
        "burst-2-0": (900, 1200, 4800 + 1800, 3600),  # "c": the middle node
        "burst-2-1": (900, 1200, 12000 + 1800, 3 * 3600),  # "d", moved to position 1
        "burst-3-0": (11400, 11700, 15300 + 1800, 3600),  # "e"
    }
    assert [c.count for c in outcome.checks] == [0, 0]
    assert cloud.summary(end=outcome.end)["instances_alive_at_end"] == 0


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
