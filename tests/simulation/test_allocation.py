"""Allocation while work waits, the first wait, the ledger check, and CPU-only trace rows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.nodes import NodeUse
from broker.domain.objective import Weights
from broker.domain.work import RunningWork, lay_out
from broker.scheduling.conditions import HourlyTable
from broker.simulation.allocation import check_state, check_summary
from broker.simulation.report import summarize
from broker.simulation.run import warn_state
from broker.simulation.runs import Outcome, to_job
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob, write_trace
from tests.simulation.test_simulator import job as trace_job

T0 = datetime(2022, 3, 7, tzinfo=UTC)
W = Weights(cost=0.0, latency=0.0, carbon=1.0)
SITE = Site(name="s", kind=SiteKind.SIM, region="r", location="x:s", grid_zone="Z", private=True)
CARBON = HourlyTable({"Z": [(T0 + timedelta(hours=i), 100.0) for i in range(48)]})


def gpu_pool(model: str = "H100", *, gpus_per_node: int = 2, nodes: int = 1) -> GpuPool:
    return GpuPool(
        id=f"s/{model}",
        site="s",
        gpu_model=model,
        gpu_memory_gb=80,
        gpus_per_node=gpus_per_node,
        nodes=nodes,
        price_on_demand=2.0,
    )


def job(
    job_id: str,
    *,
    gpus: int = 1,
    duration_s: int = 3600,
    submit_s: float = 0,
    models: tuple[str, ...] = ("H100",),
) -> TraceJob:
    return trace_job(
        job_id,
        gpus=gpus,
        duration_s=duration_s,
        submit_s=submit_s,
        models=models,
        kind=JobKind.INFERENCE,
    )


def replay(trace: list[TraceJob], pools: list[GpuPool], *, policy: str = "fifo") -> Outcome:
    return Simulation(
        trace=trace,
        sites=[SITE],
        pools=pools,
        latency=LatencyMatrix({}),
        carbon=CARBON,
        engine=Engine(EngineSettings(weights={t: W for t in Tier}, deferral=False)),
        start=T0,
        policy=policy,
    ).run()


def figures(outcome: Outcome) -> dict[str, object]:
    return summarize(outcome, carbon=CARBON, utilisation=0.8)


@pytest.mark.parametrize("policy", ["fifo", "broker"])
def test_the_second_job_waits_while_half_the_pool_is_allocated(policy: str) -> None:
    # a 2-GPU pool; `a` (1 GPU, 1 h) starts, `b` (2 GPUs, 30 min) waits for the whole hour
    out = replay([job("a"), job("b", gpus=2, duration_s=1800)], [gpu_pool()], policy=policy)
    s = figures(out)
    assert s["allocation_while_waiting"] == {
        "overall": 0.5,
        "by_model": {"H100": 0.5},
        "waiting_hours": 1.0,
    }
    assert s["first_wait"] == {"at_s": 0.0, "allocated_share": 0.5}
    # the mean over the whole replay is higher: (0.5 × 1 h + 1.0 × 0.5 h) / 1.5 h
    assert s["allocation_ratio_mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["final_state_check"]["ok"] is True
    assert [c["label"] for c in s["final_state_check"]["checked"]] == ["peak", "end"]


def test_a_full_pool_with_work_waiting_is_share_one() -> None:
    pool = gpu_pool(gpus_per_node=1)
    s = figures(replay([job("a"), job("b")], [pool]))
    assert s["allocation_while_waiting"] == {
        "overall": 1.0,
        "by_model": {"H100": 1.0},
        "waiting_hours": 1.0,
    }
    assert s["first_wait"] == {"at_s": 0.0, "allocated_share": 1.0}


def test_first_wait_comes_when_a_job_first_finds_no_room() -> None:
    pool = gpu_pool(gpus_per_node=1)
    s = figures(replay([job("a"), job("b", submit_s=600)], [pool]))
    assert s["first_wait"] == {"at_s": 600.0, "allocated_share": 1.0}
    waiting = s["allocation_while_waiting"]
    assert isinstance(waiting, dict)
    assert waiting["waiting_hours"] == pytest.approx(3000 / 3600, abs=0.01)


def test_nothing_waits_then_none() -> None:
    s = figures(replay([job("a"), job("b", submit_s=3600)], [gpu_pool(gpus_per_node=1)]))
    assert s["allocation_while_waiting"] is None
    assert s["first_wait"] is None
    assert s["allocation_ratio_mean"] == 1.0


def test_allocation_while_waiting_is_split_by_model() -> None:
    # H100 pool: `a` holds 1 of 2 GPUs for the hour `b` waits; L4 pool: `c` fills it for
    # the first 15 minutes of that hour, then it is empty
    trace = [
        job("a"),
        job("b", gpus=2, duration_s=1800),
        job("c", gpus=2, duration_s=900, models=("L4",)),
    ]
    s = figures(replay(trace, [gpu_pool("H100"), gpu_pool("L4")]))
    assert s["allocation_while_waiting"] == {
        "overall": 0.375,  # (1 GPU × 60 min + 2 GPUs × 15 min) / (4 GPUs × 60 min)
        "by_model": {"H100": 0.5, "L4": 0.25},
        "waiting_hours": 1.0,
    }
    assert s["first_wait"] == {"at_s": 0.0, "allocated_share": 0.75}


# The ledger check.


def work(
    job_id: str,
    *,
    milli: int,
    nodes: tuple[int, ...] = (0,),
    gpus: tuple[tuple[int, ...], ...] | None = None,
    cpu: int = 0,
) -> RunningWork:
    return RunningWork(
        job_id=job_id,
        tenant="t",
        tier=Tier.P2,
        preemptible=False,
        pool_id="s/H100",
        node_indices=nodes,
        node_gpus=gpus if gpus is not None else ((0,),) * len(nodes),
        milli_per_node=milli,
        cpu_milli=cpu,
        gpu_model="H100",
        started_at=T0,
        placed_at=T0,
    )


def test_a_consistent_ledger_passes() -> None:
    pools, running = lay_out(
        [gpu_pool(nodes=2)],
        [
            work("x", milli=500, nodes=(0, 1), gpus=()),
            work("y", milli=1000, gpus=()),
            work("z", milli=500, nodes=(1,), gpus=()),
        ],
    )
    pool = pools[0]
    assert [u.gpus for u in pool.uses()] == [(500, 1000), (1000, 0)]  # z joins x's GPU
    check = check_state(at=T0, label="end", pools={pool.id: pool}, running=running)
    assert (check.violations, check.count) == ((), 0)
    assert check_summary([check])["ok"] is True


def test_the_check_catches_a_planted_over_allocation() -> None:
    # one 1-GPU node: the ledger says 1.2 GPUs, and two half-GPU fractions plus a 0.7 one
    # were placed on it (the third where only 0 was free)
    pool = replace(gpu_pool(gpus_per_node=1), node_use=(NodeUse((1200,)),))
    running = [work("x", milli=500), work("y", milli=500), work("z", milli=700)]
    check = check_state(at=T0, label="peak", pools={pool.id: pool}, running=running)
    assert check.count == 3
    assert check.violations == (
        "peak: node 0 of s/H100: ledger GPU 0 holds 1200 milli-GPUs",
        "peak: node 0 of s/H100: running work GPU 0 holds 1700 milli-GPUs",
        "peak: node 0 of s/H100: ledger GPUs [1200] (milli), CPU 0m, memory 0 MiB, "
        "running work GPUs [1700] (milli), CPU 0m, memory 0 MiB",
    )
    summary = check_summary([check, check_state(at=T0, label="end", pools={}, running=[])])
    assert summary["ok"] is False
    assert summary["violation_count"] == 3
    assert len(summary["violations"]) == 3


def test_the_check_catches_a_split_fraction_and_cpu_past_the_node() -> None:
    # two GPUs each 0.6 used: a 0.6 fraction "fits" the 0.8 free in all, on no one GPU
    pool = replace(gpu_pool(), node_use=(NodeUse((600, 600), 96_000 + 4_000),))
    running = [
        work("a", milli=600, gpus=((0,),), cpu=50_000),
        work("b", milli=600, gpus=((1,),), cpu=50_000),
        work("c", milli=600, gpus=((0, 1),)),  # one share over two GPUs
    ]
    check = check_state(at=T0, label="end", pools={pool.id: pool}, running=running)
    assert check.violations[0] == "end: job c holds GPUs [0, 1] on node 0 of s/H100 for 0.6 GPUs"
    assert "end: node 0 of s/H100: ledger CPU 100000m of 96000m" in check.violations
    assert "end: node 0 of s/H100: running work GPU 0 holds 1200 milli-GPUs" in check.violations
    assert "end: node 0 of s/H100: running work CPU 100000m of 96000m" in check.violations


def test_the_check_catches_work_the_ledger_lost_and_lists_ten(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pool = gpu_pool(gpus_per_node=8, nodes=12)  # an empty ledger under twelve running jobs
    running = [work(f"j{i}", milli=1000, nodes=(i,)) for i in range(12)]
    running.append(work("ghost", milli=1000, nodes=(12,)))  # a node the pool does not have
    check = check_state(at=T0, label="end", pools={pool.id: pool}, running=running)
    assert check.count == 13
    assert len(check.violations) == 10
    assert check.violations[0] == "end: job ghost on node 12 of s/H100, which has 12 node(s)"
    summary = check_summary([check])
    warn_state("fifo", summary)
    assert "fifo: 13 ledger violation(s), e.g. end: job ghost" in capsys.readouterr().err
    warn_state("fifo", check_summary([]))
    assert capsys.readouterr().err == ""


# CPU and memory columns, CPU-only rows.


def test_cpu_and_memory_reach_the_job_where_stated() -> None:
    stated = to_job(replace(job("a"), cpu=16.0, memory_gb=128.0), start=T0).spec.resources
    assert (stated.cpu, stated.memory_gb) == (16.0, 128.0)
    default = to_job(job("b"), start=T0).spec.resources
    assert (default.cpu, default.memory_gb) == (1.0, 4.0)  # Resources' defaults


@pytest.mark.parametrize("policy", ["fifo", "broker"])
def test_cpu_only_rows_take_the_cpu_a_gpu_job_needs_until_they_end(policy: str) -> None:
    # one 2-GPU node of 8 CPUs: the CPU-only row (8 CPUs, 1 h) arrives first and takes all
    # of its CPU, so the GPU job (1 CPU) waits for it although both GPUs are free
    small = replace(gpu_pool(), cpu_per_node=8.0)
    etl = replace(job("etl"), gpus=0, cpu=8.0, memory_gb=16.0)
    gpu_job = replace(job("a", submit_s=1), cpu=1.0)
    out = replay([etl, gpu_job], [small], policy=policy)
    (only,) = out.jobs
    assert only.first_start == T0 + timedelta(hours=1)
    assert out.background == {
        "rows": 1,
        "ran": 1,
        "never_placed": 0,
        "mean_wait_s": 0.0,
        "longest_wait_s": 0.0,
        "placement": out.background["placement"],
    }
    assert all(c.count == 0 for c in out.checks)


def test_cpu_only_rows_wait_in_line_for_room() -> None:
    small = replace(gpu_pool(), cpu_per_node=8.0)
    rows = [replace(job(f"etl{i}"), gpus=0, cpu=6.0, memory_gb=1.0) for i in range(3)]
    out = replay(rows, [small])
    assert out.background["ran"] == 3
    assert out.background["longest_wait_s"] == 7200.0  # one at a time, 1 h each
    assert out.jobs == []


def test_simulate_replays_cpu_only_jobs_as_shared_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    cpu_only = [replace(job(f"etl{i}"), gpus=0, cpu=4.0, memory_gb=16.0) for i in range(2)]
    write_trace(trace, [job("a"), job("b"), *cpu_only])
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "sites:\n"
        "  - {name: s, kind: sim, region: r, grid_zone: SE,\n"
        "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 1, nodes: 1,\n"
        "              price_on_demand: 3.0}]}\n"
    )
    out = tmp_path / "out"
    args = ["simulate", "--trace", str(trace), "--fleet", str(fleet), "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "CPU-only" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"] == 4
    assert summary["cpu_only_jobs"] == 2
    assert summary["comparison"]["partial"] is False
    for policy in ("broker", "fifo"):
        s = summary["policies"][policy]
        assert s["jobs"] == 2
        assert s["cpu_only_jobs"]["ran"] == 2
        assert s["allocation_while_waiting"]["overall"] == 1.0
        assert s["first_wait"] == {"at_s": 0.0, "allocated_share": 1.0}
        assert s["final_state_check"] == {
            "ok": True,
            "checked": [
                {"label": "peak", "at": T0.isoformat()},
                {"label": "end", "at": (T0 + timedelta(hours=2)).isoformat()},
            ],
            "violation_count": 0,
            "violations": [],
        }
    html = (out / "report.html").read_text()
    assert "allocation while jobs wait" in html and "0.0 h at 100.0%" in html
