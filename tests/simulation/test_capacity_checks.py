"""Can a fleet serve a trace (capacity_check.py), and where the lower bound puts its work
(report.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.scheduling.conditions import HourlyTable
from broker.simulation import capacity_check
from broker.simulation.report import offline_lower_bound, summarize
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob, write_trace

T0 = datetime(2022, 3, 7, tzinfo=UTC)
H = 3600


def job(
    job_id: str,
    *,
    submit_s: float = 0,
    duration_s: int = H,
    gpus: int = 8,
    nodes: int = 1,
    models: tuple[str, ...] = ("H100",),
    slack_s: float | None = 0.0,
) -> TraceJob:
    return TraceJob(
        job_id=job_id,
        submit_s=submit_s,
        duration_s=duration_s,
        gpus=gpus,
        gpu_fraction=None,
        nodes=nodes,
        gpu_models=models,
        tier=Tier.P2,
        tenant="t",
        deadline_s=None if slack_s is None else submit_s + duration_s + slack_s,
        origin=None,
        preemptible=None,
        kind=JobKind.TRAINING,
    )


# ---- capacity_check.py ---------------------------------------------------------------------------


def test_must_run_peak_counts_only_jobs_pinned_in_time() -> None:
    jobs = [
        job("a", duration_s=10 * H, slack_s=2 * H),  # must run over [2 h, 10 h)
        job("b", submit_s=5 * H, duration_s=10 * H, gpus=4, slack_s=1 * H),  # [6 h, 15 h)
        job("c", duration_s=H, slack_s=5 * H),  # slack longer than the run: never pinned
        job("d", duration_s=100 * H, slack_s=None),  # no deadline: never pinned
    ]
    peak, at = capacity_check.must_run_peak(jobs)
    assert peak == 12
    assert at == 6 * H


def test_a_release_and_a_start_at_the_same_instant_do_not_add_up() -> None:
    jobs = [job("a", duration_s=2 * H), job("b", submit_s=2 * H, duration_s=2 * H)]
    assert capacity_check.must_run_peak(jobs) == (8, 0)


def test_analyse_confines_jobs_to_their_model_lists_and_flags_what_cannot_fit() -> None:
    jobs = [
        job("big-1", duration_s=10 * H),
        job("big-2", duration_s=10 * H),
        job("flex", duration_s=10 * H, models=("H100", "A100")),
        job("any", duration_s=2 * H, gpus=1, models=(), slack_s=None),
    ]
    rows = {r.models: r for r in capacity_check.analyse(jobs, fleet_gpus={"H100": 8, "A100": 16})}
    h100 = rows[("H100",)]
    assert (h100.jobs, h100.fleet_gpus, h100.must_run_peak_gpus) == (2, 8, 16)
    assert h100.gpu_hours == pytest.approx(160)
    assert not h100.feasible  # two pinned 8-GPU jobs, one 8-GPU H100 pool
    both = rows[("A100", "H100")]
    # "any model" spans the same two models here, so all four jobs are confined to them
    assert (both.jobs, both.fleet_gpus, both.must_run_peak_gpus) == (4, 24, 24)
    assert both.feasible
    assert len(rows) == 2
    # mean load: GPU-hours over the submission window, which is 0 here
    assert h100.mean_busy_gpus == 0


def test_capacity_check_command_exits_1_when_a_model_list_cannot_be_served(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    write_trace(trace, [job("a", duration_s=10 * H), job("b", submit_s=H, duration_s=10 * H)])
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "sites:\n"
        "  - {name: s, kind: sim, region: r, grid_zone: SE, pools: [{gpu_model: H100,\n"
        "     gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1, price_on_demand: 2}]}\n"
    )
    assert capacity_check.main(["--trace", str(trace), "--fleet", str(fleet)]) == 1
    fleet.write_text(fleet.read_text().replace("nodes: 1", "nodes: 2"))
    assert capacity_check.main(["--trace", str(trace), "--fleet", str(fleet)]) == 0


# ---- report.py: the lower bound's placements, emissions by site ------------------------------


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


def pool(site_name: str, *, nodes: int) -> GpuPool:
    return GpuPool(
        id=f"{site_name}/H100",
        site=site_name,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=nodes,
        price_on_demand=2.0,
    )


def carbon_engine() -> Engine:
    w = Weights(cost=0.0, latency=0.0, carbon=1.0)
    return Engine(EngineSettings(weights={t: w for t in Tier}, deferral=False))


def test_lower_bound_reports_where_its_schedule_overfills_a_pool() -> None:
    sites = [site("clean", "C"), site("dirty", "D")]
    oracle = HourlyTable(
        {
            z: [(T0 + timedelta(hours=i), v) for i in range(48)]
            for z, v in (("C", 10.0), ("D", 500.0))
        }
    )
    trace = [job("a", duration_s=2 * H), job("b", submit_s=H, duration_s=2 * H)]
    results = {}
    for nodes in (1, 2):
        pools = [pool("clean", nodes=nodes), pool("dirty", nodes=4)]
        out = Simulation(
            trace=trace,
            sites=sites,
            pools=pools,
            latency=LatencyMatrix({}),
            carbon=oracle,
            engine=carbon_engine(),
            start=T0,
            policy="broker",
        ).run()
        lower = offline_lower_bound(
            out.jobs,
            sites=sites,
            pools=pools,
            latency=LatencyMatrix({}),
            carbon=oracle,
            engine=carbon_engine(),
        )
        results[nodes] = (summarize(out, carbon=oracle, utilisation=0.8), lower)
    broker, lower = results[1]
    # both jobs alone at the clean pool: they overlap for an hour, 16 GPUs on an 8-GPU pool
    assert lower["by_pool"] == {
        "clean/H100": {
            "kgco2e": pytest.approx(lower["kgco2e"]),
            "gpu_hours": 32.0,
            "peak_gpus": 16.0,
            "pool_gpus": 8,
        }
    }
    assert lower["over_capacity_share"] == 1.0
    # the broker had to send the second job to the dirty site, which by_site shows
    assert set(broker["by_site"]) == {"clean", "dirty"}
    assert broker["by_site"]["dirty"]["kgco2e"] > broker["by_site"]["clean"]["kgco2e"]
    assert sum(s["kgco2e"] for s in broker["by_site"].values()) == pytest.approx(
        broker["kgco2e"], abs=1e-3
    )
    assert sum(s["gpu_hours"] for s in broker["by_site"].values()) == pytest.approx(32.0)
    # with room at the clean site the bound is a schedule the fleet can hold, and is met
    broker, lower = results[2]
    assert lower["over_capacity_share"] == 0.0
    assert lower["by_pool"]["clean/H100"]["peak_gpus"] == 16.0
    assert broker["kgco2e"] == pytest.approx(lower["kgco2e"], abs=1e-3)
