"""`broker simulate` finds the jobs no pool can ever take, says so, and marks ratios partial."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import JobKind, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.simulation.report import unrunnable_jobs
from broker.simulation.traces import TraceJob, write_trace
from tests.simulation.test_simulator import job as trace_job

T0 = datetime(2022, 3, 7, tzinfo=UTC)
W = Weights(cost=0.0, latency=0.0, carbon=1.0)
FLEET = (
    "sites:\n"
    "  - {name: dirty, kind: sim, region: r2, grid_zone: US-MIDA-PJM,\n"
    "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
    "              price_on_demand: 3.0}]}\n"
    "  - {name: clean, kind: sim, region: r1, grid_zone: SE,\n"
    "     pools: [{gpu_model: A100-80GB, gpu_memory_gb: 80, gpus_per_node: 4, nodes: 2,\n"
    "              price_on_demand: 2.0}]}\n"
)


def job(job_id: str, *, models: tuple[str, ...] = ("H100",), gpus: int = 1) -> TraceJob:
    # inference: every shipped model has an inference throughput figure
    return trace_job(job_id, duration_s=600, gpus=gpus, models=models, kind=JobKind.INFERENCE)


def test_unrunnable_jobs_are_grouped_by_the_closest_pools_reason() -> None:
    site = Site(
        name="s", kind=SiteKind.SIM, region="r", location="x:s", grid_zone="SE", private=True
    )
    pools = [
        GpuPool(
            id=f"s/{model}",
            site="s",
            gpu_model=model,
            gpu_memory_gb=80,
            gpus_per_node=8,
            nodes=1,
            price_on_demand=1.0,
        )
        for model in ("H100", "A100-80GB")
    ]
    trace = [
        job("ok"),
        job("any-model", models=()),
        job("b200-1", models=("B200",)),
        job("b200-2", models=("B200", "MI300X")),
        job("too-wide", gpus=16),  # the H100 pool got past the model rule: gpus_per_node
    ]

    found = unrunnable_jobs(
        trace,
        sites=[site],
        pools=pools,
        latency=LatencyMatrix({}),
        engine=Engine(EngineSettings(weights={t: W for t in Tier})),
        start=T0,
    )

    assert found["count"] == 3
    by_reason = found["by_reason"]
    assert list(by_reason) == ["gpu_model", "gpus_per_node"]
    assert by_reason["gpu_model"]["count"] == 2
    assert by_reason["gpu_model"]["job_ids"] == ["b200-1", "b200-2"]
    assert by_reason["gpus_per_node"]["job_ids"] == ["too-wide"]
    assert by_reason["gpus_per_node"]["example"]


def test_simulate_warns_and_marks_the_comparison_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    jobs = [job(f"j{i}") for i in range(4)]
    jobs += [job(f"b{i}", models=("B200",)) for i in range(7)]
    jobs.append(job("wide", models=("A100-80GB",), gpus=8))
    write_trace(trace, jobs)
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    out = tmp_path / "out"

    code = main(
        ["simulate", "--trace", str(trace), "--fleet", str(fleet), "--out", str(out), "--quiet"]
    )

    assert code == 0
    err = capsys.readouterr().err
    assert "8 of 12 jobs can never run on this fleet" in err
    assert "gpu_model: 7 (e.g. b0, b1, b2, b3, b4:" in err
    assert "gpus_per_node: 1 (e.g. wide:" in err
    summary = json.loads((out / "summary.json").read_text())
    unrunnable = summary["unrunnable_jobs"]
    assert unrunnable["count"] == 8
    assert unrunnable["by_reason"]["gpu_model"]["count"] == 7
    assert len(unrunnable["by_reason"]["gpu_model"]["job_ids"]) == 5
    assert unrunnable["by_reason"]["gpus_per_node"]["job_ids"] == ["wide"]
    comparison = summary["comparison"]
    assert comparison["partial"] is True
    assert "8 job(s) no pool can ever run" in comparison["note"]
    assert "broker 8" in comparison["note"] and "fifo 8" in comparison["note"]


def test_a_fully_runnable_trace_is_not_partial(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    write_trace(trace, [job(f"j{i}") for i in range(3)])
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    out = tmp_path / "out"

    assert (
        main(
            ["simulate", "--trace", str(trace), "--fleet", str(fleet), "--out", str(out), "--quiet"]
        )
        == 0
    )

    summary = json.loads((out / "summary.json").read_text())
    assert summary["unrunnable_jobs"] == {"count": 0, "by_reason": {}}
    assert summary["comparison"]["partial"] is False
    assert "note" not in summary["comparison"]
