"""The saturating workload deriver: seeded, documented rules on a tiny trace and fleet."""

from __future__ import annotations

from pathlib import Path

from broker.config import load_settings
from broker.domain.enums import JobKind, Tier
from broker.simulation import workloads
from broker.simulation.traces import TraceJob, read_trace, write_trace

FLEET = """\
sites:
  - name: tiny
    kind: sim
    region: r
    grid_zone: "SE"
    private: true
    pools:
      - {gpu_model: V100, gpu_memory_gb: 16, gpus_per_node: 8, nodes: 3,
         price_on_demand: 1, cpu_per_node: 96, memory_gb_per_node: 384}
      - {gpu_model: T4, gpu_memory_gb: 16, gpus_per_node: 2, nodes: 2,
         price_on_demand: 1, cpu_per_node: 104, memory_gb_per_node: 512}
"""


def _job(i: int, *, gpus: int = 1, nodes: int = 1) -> TraceJob:
    return TraceJob(
        job_id=f"j{i:03d}",
        submit_s=1000.0 * i,
        duration_s=600,
        gpus=gpus,
        gpu_fraction=None,
        nodes=nodes,
        gpu_models=("H100",),
        tier=Tier.P2,
        tenant="t",
        deadline_s=1000.0 * i + 5000,
        origin=None,
        preemptible=None,
        kind=JobKind.TRAINING,
    )


def _fleet(tmp_path: Path) -> workloads.FleetProfile:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET, encoding="utf-8")
    return workloads.fleet_profile(load_settings(path, env={}))


def test_fleet_profile_weights_per_gpu_figures_by_gpus(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    assert fleet.gpus_by_model == {"T4": 4, "V100": 24}
    assert fleet.node_shapes == {"V100": ((8, 96, 384),), "T4": ((2, 104, 512),)}
    assert (fleet.cpu_per_gpu, fleet.memory_gb_per_gpu) == (12, 48)  # the V100 pool's


def test_rules_hold_on_every_job(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    source = [_job(i, gpus=8 if i % 5 == 0 else 1) for i in range(300)]
    jobs = workloads.derive(source, fleet=fleet, seed=3, limit=200, window_s=3600)
    assert [j.job_id for j in jobs] == [f"j{i:03d}" for i in range(200)]
    assert jobs[0].submit_s == 0 and jobs[-1].submit_s == 3600
    for job in jobs:
        assert job.deadline_s == job.submit_s + 5000  # slack kept
        assert job.gpu_models in ((), ("V100",), ("T4",))
        if job.gpus == 8:
            assert job.gpu_models in ((), ("V100",)) and job.gpu_fraction is None
        per_node = job.gpu_fraction or job.gpus
        assert 0.5 <= job.cpu <= per_node * 12 and job.cpu % workloads.CPU_STEP == 0
        assert 1 <= job.memory_gb <= max(1.0, per_node * 48)
    pinned = sum(1 for j in jobs if j.gpu_models) / len(jobs)
    fractional = sum(1 for j in jobs if j.gpu_fraction is not None) / 160  # 1-GPU jobs
    assert 0.2 < pinned < 0.47
    assert 0.15 < fractional < 0.45


def test_a_jobs_fields_depend_only_on_seed_and_job(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    source = [_job(i) for i in range(50)]
    full = {j.job_id: j for j in workloads.derive(source, fleet=fleet, seed=1)}
    part = workloads.derive(source, fleet=fleet, seed=1, limit=10)
    for job in part:
        twin = full[job.job_id]
        assert (job.cpu, job.memory_gb, job.gpu_fraction, job.gpu_models) == (
            twin.cpu,
            twin.memory_gb,
            twin.gpu_fraction,
            twin.gpu_models,
        )
    other = workloads.derive(source, fleet=fleet, seed=2)
    assert [j.cpu for j in other] != [full[j.job_id].cpu for j in other]


def test_cli_writes_a_canonical_trace_with_resources(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    write_trace(tmp_path / "in.csv", [_job(i) for i in range(20)])
    out = tmp_path / "out.csv"
    assert (
        workloads.main(
            [str(tmp_path / "in.csv"), str(tmp_path / "fleet.yaml"), str(out), "--jobs", "5"]
        )
        == 0
    )
    jobs = read_trace(out)
    assert len(jobs) == 5 and all(j.cpu > 0 and j.memory_gb > 0 for j in jobs)
