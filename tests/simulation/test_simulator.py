"""The trace-replay simulator: the engine's decisions in virtual time, against hand figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.scheduling.conditions import HourlyTable
from broker.simulation.report import offline_lower_bound, percentile, summarize
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob, write_trace

T0 = datetime(2022, 3, 7, tzinfo=UTC)
H100_KW = 0.7 * 0.8  # board power x utilisation, PUE 1.0 below


def site(name: str, zone: str) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region=name,
        location=f"x:{name}",
        grid_zone=zone,
        private=True,
        pue=1.0,
    )


def pool(site_name: str, *, nodes: int = 1, price: float = 2.0) -> GpuPool:
    return GpuPool(
        id=f"{site_name}/H100",
        site=site_name,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=nodes,
        price_on_demand=price,
    )


def carbon(**zones: list[float]) -> HourlyTable:
    return HourlyTable(
        {z: [(T0 + timedelta(hours=i), v) for i, v in enumerate(vals)] for z, vals in zones.items()}
    )


def job(
    job_id: str,
    *,
    submit_s: float = 0,
    duration_s: int = 3600,
    gpus: int = 1,
    tier: Tier = Tier.P2,
    deadline_s: float | None = None,
    models: tuple[str, ...] = ("H100",),
    kind: JobKind | None = None,
) -> TraceJob:
    """A trace job; its kind follows its tier unless given."""
    if kind is None:
        kind = {
            Tier.P1: JobKind.INFERENCE,
            Tier.P2: JobKind.TRAINING,
            Tier.P3: JobKind.EXPERIMENT,
        }[tier]
    return TraceJob(
        job_id=job_id,
        submit_s=submit_s,
        duration_s=duration_s,
        gpus=gpus,
        gpu_fraction=None,
        nodes=1,
        gpu_models=models,
        tier=tier,
        tenant="t",
        deadline_s=deadline_s,
        origin=None,
        preemptible=None,
        kind=kind,
    )


def engine(**kw: object) -> Engine:
    w = Weights(cost=0.0, latency=0.0, carbon=1.0)
    return Engine(EngineSettings(weights={Tier.P1: w, Tier.P2: w, Tier.P3: w}, **kw))  # type: ignore[arg-type]


def simulate(
    trace: list[TraceJob],
    *,
    sites: list[Site],
    pools: list[GpuPool],
    oracle: HourlyTable,
    policy: str,
    eng: Engine | None = None,
):  # type: ignore[no-untyped-def]
    sim = Simulation(
        trace=trace,
        sites=sites,
        pools=pools,
        latency=LatencyMatrix({}),
        carbon=oracle,
        engine=eng or engine(deferral=False),
        start=T0,
        policy=policy,
    )
    return sim.run()


FLAT = 72


def test_broker_routes_to_the_clean_site_fifo_to_the_first() -> None:
    sites = [site("dirty", "D"), site("clean", "C")]
    pools = [pool("dirty"), pool("clean")]
    oracle = carbon(D=[500.0] * FLAT, C=[50.0] * FLAT)
    trace = [job("a"), job("b", submit_s=60)]
    broker = summarize(
        simulate(trace, sites=sites, pools=pools, oracle=oracle, policy="broker"),
        carbon=oracle,
        utilisation=0.8,
    )
    fifo = summarize(
        simulate(trace, sites=sites, pools=pools, oracle=oracle, policy="fifo"),
        carbon=oracle,
        utilisation=0.8,
    )
    # two 1-GPU H100 hours: 0.56 kWh each
    assert broker["energy_kwh"] == pytest.approx(2 * H100_KW, abs=0.05)
    assert broker["kgco2e"] == pytest.approx(2 * H100_KW * 50 / 1000, abs=0.005)
    assert fifo["kgco2e"] == pytest.approx(2 * H100_KW * 500 / 1000, abs=0.005)
    assert broker["cost_usd"] == fifo["cost_usd"] == pytest.approx(4.0)
    assert broker["deadline_misses"] == fifo["deadline_misses"] == 0


def test_deferral_waits_for_the_valley_and_meets_the_deadline() -> None:
    sites = [site("only", "Z")]
    pools = [pool("only")]
    series = [400.0] * FLAT
    series[3] = 40.0  # a clean hour three hours ahead
    oracle = carbon(Z=series)
    trace = [job("a", deadline_s=12 * 3600)]
    out = simulate(
        trace,
        sites=sites,
        pools=pools,
        oracle=oracle,
        policy="broker",
        eng=engine(deferral=True, deferral_min_saving=0.1, deferral_margin_s=0),
    )
    sj = out.jobs[0]
    assert sj.deferred
    assert sj.first_start == T0 + timedelta(hours=3)
    s = summarize(out, carbon=oracle, utilisation=0.8)
    assert s["kgco2e"] == pytest.approx(H100_KW * 40 / 1000, abs=0.002)
    assert s["wait_s"]["P2"]["max"] == 3 * 3600
    assert s["deadline_misses"] == 0
    lower = offline_lower_bound(
        out.jobs,
        sites=sites,
        pools=pools,
        latency=LatencyMatrix({}),
        carbon=oracle,
        engine=engine(),
    )
    assert lower["kgco2e"] == pytest.approx(s["kgco2e"], abs=0.002)


def test_p1_preempts_p3_which_restarts_after_it() -> None:
    sites = [site("only", "Z")]
    pools = [pool("only")]
    oracle = carbon(Z=[100.0] * FLAT)
    trace = [
        job("p3", gpus=8, tier=Tier.P3, duration_s=7200),
        job("p1", gpus=8, tier=Tier.P1, submit_s=1800, duration_s=600),
    ]
    broker = simulate(
        trace,
        sites=sites,
        pools=pools,
        oracle=oracle,
        policy="broker",
        eng=engine(deferral=False, min_runtime_s=300),
    )
    by = {sj.job.id: sj for sj in broker.jobs}
    assert by["p1"].first_start == T0 + timedelta(seconds=1800)  # no wait
    assert by["p3"].preemptions == 1
    assert [r.preempted for r in by["p3"].runs] == [True, False]
    assert by["p3"].finish == T0 + timedelta(seconds=1800 + 600 + 7200)  # restarted whole
    fifo = simulate(trace, sites=sites, pools=pools, oracle=oracle, policy="fifo")
    fby = {sj.job.id: sj for sj in fifo.jobs}
    assert fby["p1"].first_start == T0 + timedelta(seconds=7200)  # waited behind the P3
    s = summarize(broker, carbon=oracle, utilisation=0.8)
    assert s["preemptions"] == 1
    assert s["wait_s"]["P1"]["p99"] == 0


def test_min_runtime_protects_a_just_started_job() -> None:
    sites = [site("only", "Z")]
    pools = [pool("only")]
    oracle = carbon(Z=[100.0] * FLAT)
    trace = [
        job("p3", gpus=8, tier=Tier.P3, duration_s=7200),
        job("p1", gpus=8, tier=Tier.P1, submit_s=60, duration_s=600),
    ]
    out = simulate(
        trace,
        sites=sites,
        pools=pools,
        oracle=oracle,
        policy="broker",
        eng=engine(deferral=False, min_runtime_s=3600),
    )
    by = {sj.job.id: sj for sj in out.jobs}
    assert by["p3"].preemptions == 0
    assert by["p1"].first_start == T0 + timedelta(seconds=7200)


def test_summary_counts_deadline_misses_and_allocation() -> None:
    sites = [site("only", "Z")]
    pools = [pool("only")]
    oracle = carbon(Z=[100.0] * FLAT)
    # two 8-GPU jobs on one 8-GPU node: the second can only start after the first
    trace = [
        job("a", gpus=8, duration_s=3600, deadline_s=4000),
        job("b", gpus=8, duration_s=3600, deadline_s=4000),
    ]
    s = summarize(
        simulate(trace, sites=sites, pools=pools, oracle=oracle, policy="fifo"),
        carbon=oracle,
        utilisation=0.8,
    )
    assert s["deadline_misses"] == 1
    assert s["allocation_ratio_mean"] == pytest.approx(1.0)
    assert s["makespan_h"] == pytest.approx(2.0)
    assert s["completion_s"]["P2"]["max"] == 7200
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 99) is None


def test_broker_simulate_command_writes_summary_and_report(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.csv"
    write_trace(
        trace_path, [job(f"j{i}", submit_s=i * 600, deadline_s=i * 600 + 86400) for i in range(6)]
    )
    repo = Path(__file__).resolve().parents[2]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        f"latency: {{file: {repo / 'config' / 'latency.csv'}}}\n"
        "sites:\n"  # first-fit (fifo) takes the dirty site listed first
        "  - {name: dirty, kind: sim, region: r2, location: 'aws:us-east-1',\n"
        "     grid_zone: US-MIDA-PJM,\n"
        "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
        "              price_on_demand: 3.0}]}\n"
        "  - {name: clean, kind: sim, region: r1, location: 'aws:eu-north-1', grid_zone: SE,\n"
        "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
        "              price_on_demand: 3.0}]}\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--trace",
            str(trace_path),
            "--fleet",
            str(fleet),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"broker", "fifo"}
    assert summary["jobs"] == 6
    b, f = summary["policies"]["broker"], summary["policies"]["fifo"]
    assert b["unfinished"] == f["unfinished"] == 0
    # static table, lifecycle basis: SE 40.7, PJM 361 g/kWh; six 1-GPU H100 hours, PUE 1.2
    assert b["kgco2e"] == pytest.approx(6 * H100_KW * 1.2 * 40.7 / 1000, abs=0.0005)
    assert b["kgco2e"] < f["kgco2e"]
    assert summary["lower_bound"]["kgco2e"] <= b["kgco2e"] + 1e-9
    html = (out / "report.html").read_text()
    assert "<svg" in html and "GPU allocation" in html and "offline lower bound" in html


def test_a_site_without_an_outlook_is_left_out_of_deferral_not_a_crash() -> None:
    sites = [site("known", "K"), site("unknown", "U")]
    pools = [pool("known"), pool("unknown")]
    series = [300.0] * FLAT
    series[2] = 30.0
    oracle = carbon(K=series)  # no series at all for zone U
    trace = [job("a", deadline_s=12 * 3600), job("b", gpus=8, deadline_s=12 * 3600)]
    out = simulate(
        trace,
        sites=sites,
        pools=pools,
        oracle=oracle,
        policy="broker",
        eng=engine(deferral=True, deferral_margin_s=0),
    )
    starts = {sj.job.id: sj.first_start for sj in out.jobs}
    assert starts["a"] == T0 + timedelta(hours=2)  # deferred to K's clean hour


def test_replay_oracle_falls_back_to_the_static_table(tmp_path: Path) -> None:
    from broker.simulation.oracle import ReplayOracle
    from carbon.replay import ReplaySource
    from carbon.static import StaticTableSource

    csv = tmp_path / "series.csv"
    csv.write_text(
        "timestamp_utc,region,gco2_per_kwh\n"
        "2022-03-07T00:00:00Z,XX,100\n2022-03-07T01:00:00Z,XX,200\n"
    )
    oracle = ReplayOracle(
        replay=ReplaySource.from_csv([csv], wrap=True), static=StaticTableSource.default()
    )
    rows = oracle.hourly("XX", start=T0, end=T0 + timedelta(hours=3))
    assert [v for _, v in rows] == [100.0, 200.0, 100.0]  # looped
    se = oracle.hourly("SE", start=T0 + timedelta(minutes=30), end=T0 + timedelta(hours=2))
    assert [t for t, _ in se] == [T0, T0 + timedelta(hours=1)]
    assert {v for _, v in se} == {40.7}  # the lifecycle row (codecarbon, Sweden)
    assert oracle.hourly("NOWHERE", start=T0, end=T0 + timedelta(hours=1)) == []


def test_run_time_depends_on_the_model_with_gpu_performance_on() -> None:
    from dataclasses import replace

    from carbon.performance import WorkloadClass, shipped_table

    sites = [site("slow", "S"), site("fast", "F")]
    l4 = replace(pool("slow"), id="slow/L4", gpu_model="L4", gpu_memory_gb=24)
    pools = [l4, pool("fast")]
    oracle = carbon(S=[50.0] * FLAT, F=[50.0] * FLAT)
    # inference jobs measured on the reference (A100-80GB), either model acceptable
    # (8 GPUs each: one job fills a pool)
    trace = [
        replace(job(f"j{i}", tier=Tier.P1, gpus=8), gpu_models=("H100", "L4")) for i in range(2)
    ]
    table = shipped_table()

    def run_s(on: bool, policy: str) -> dict[str, float]:
        out = simulate(
            trace,
            sites=sites,
            pools=pools,
            oracle=oracle,
            policy=policy,
            eng=engine(deferral=False, gpu_performance=on),
        )
        return {
            r.gpu_model: (r.end - r.start).total_seconds()
            for sj in out.jobs
            for r in sj.runs
            if r.end is not None
        }

    # FIFO takes the first pool (L4) for one job and the H100 for the other
    on = run_s(True, "fifo")
    for model in ("L4", "H100"):
        expected = 3600 / table.relative(model, WorkloadClass.INFERENCE)
        assert on[model] == pytest.approx(expected, abs=1), model
    assert on["L4"] > 3 * on["H100"]
    # off: every model runs for the trace's time, as before
    assert run_s(False, "fifo") == {"L4": 3600, "H100": 3600}
    # the broker, with carbon alike, ranks the faster run (less energy) first
    broker = run_s(True, "broker")
    assert broker["H100"] == pytest.approx(
        3600 / table.relative("H100", WorkloadClass.INFERENCE), abs=1
    )
