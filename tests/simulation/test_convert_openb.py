"""The openb pod-list converter on a hand-written pod list (no real data in the repo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.domain.enums import JobKind, Tier
from broker.simulation import convert
from broker.simulation.traces import read_trace

PODS = """\
name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
openb-pod-0000,12000,16384,1,1000,,LS,Running,100,1100,100
openb-pod-0001,6000,12288,1,460,V100M16|V100M32,BE,Running,150,400,160
openb-pod-0002,88000,327680,8,1000,G2,Burstable,Succeeded,200,5200,210
openb-pod-0003,20000,65536,0,0,,Guaranteed,Running,300,900,301
openb-pod-0004,11908,47104,1,1000,,BE,Pending,400,450,
openb-pod-0005,3152,5600,1,1000,,BE,Failed,500,500,500
"""


def _convert(tmp_path: Path, *extra: str) -> list:  # type: ignore[type-arg]
    src = tmp_path / "pods.csv"
    src.write_text(PODS, encoding="utf-8")
    out = tmp_path / "trace.csv"
    assert convert.main(["openb", str(src), str(out), *extra]) == 0
    return read_trace(out)


def test_pods_map_to_canonical_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = {j.job_id: j for j in _convert(tmp_path)}
    err = capsys.readouterr().err
    assert "read 6 pods; dropped 1 never scheduled, 1 with run time ≤ 0" in err
    assert "wrote 4" in err and "1 CPU-only, 1 fractional" in err
    assert set(jobs) == {"openb-pod-0000", "openb-pod-0001", "openb-pod-0002", "openb-pod-0003"}

    ls = jobs["openb-pod-0000"]
    assert (ls.submit_s, ls.duration_s, ls.gpus, ls.nodes) == (0, 1000, 1, 1)
    assert (ls.tier, ls.kind, ls.deadline_s, ls.gpu_fraction) == (
        Tier.P1,
        JobKind.INFERENCE,
        None,
        None,
    )
    assert (ls.cpu, ls.memory_gb) == (12, 16)

    share = jobs["openb-pod-0001"]
    assert share.gpu_fraction == 0.46 and share.tier is Tier.P3
    assert share.gpu_models == ("V100", "V100-32GB")
    assert share.duration_s == 240  # deletion − scheduled, not − creation

    gang = jobs["openb-pod-0002"]
    assert gang.gpus == 8 and gang.tier is Tier.P2 and gang.gpu_models == ("alibaba-G2",)
    assert gang.deadline_s == 100 + 4990 + 24 * 3600

    cpu_only = jobs["openb-pod-0003"]
    assert cpu_only.gpus == 0 and cpu_only.cpu == 20 and cpu_only.memory_gb == 64
    assert cpu_only.tier is Tier.P2


def test_undisclosed_as_matches_the_fleet_builder(tmp_path: Path) -> None:
    jobs = {j.job_id: j for j in _convert(tmp_path, "--undisclosed-as", "V100-32GB")}
    assert jobs["openb-pod-0002"].gpu_models == ("V100-32GB",)


def test_unknown_qos_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "pods.csv"
    src.write_text(
        PODS.splitlines()[0] + "\np,1000,1024,1,1000,,Gold,Running,0,10,0\n", encoding="utf-8"
    )
    assert convert.main(["openb", str(src), str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "qos" in err
