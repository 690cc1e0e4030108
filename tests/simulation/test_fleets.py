"""The fleet builder: node lists grouped into pools, assumptions written, output loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_settings
from broker.simulation import fleets
from broker.simulation.alibaba import UnknownAlibabaModel, broker_model

OPENB = """\
sn,cpu_milli,memory_mib,gpu,model
n0,32000,262144,0,
n1,96000,393216,8,G2
n2,96000,393216,8,G2
n3,8000,32768,1,V100M16
n4,96000,786432,8,V100M32
n5,64000,262144,2,P100
"""

SPOT = """\
gpu_model,gpu_capacity_num,cpu_num,node_name
H800,8,192,0
A100-SXM4-80GB,8,128,1
A100-SXM4-80GB,8,128,2
GPU-series-1,1,192,3
"""


def _build(tmp_path: Path, fmt: str, text: str, *extra: str) -> Path:
    src = tmp_path / f"{fmt}.csv"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / f"{fmt}.yaml"
    assert fleets.main([fmt, str(src), str(out), *extra]) == 0
    return out


def test_openb_pools_group_nodes_by_shape_with_assumed_undisclosed_models(tmp_path: Path) -> None:
    out = _build(tmp_path, "openb", OPENB)
    settings = load_settings(out, env={})
    (site,) = settings.sites
    assert site.private and site.grid_zone == fleets.DEFAULT_ZONE
    pools = {(p.gpu_model, p.gpus_per_node): p for p in site.pools}
    assert set(pools) == {("alibaba-G2", 8), ("V100", 1), ("V100-32GB", 8), ("P100", 2)}
    g2 = pools[("alibaba-G2", 8)]
    assert (g2.nodes, g2.cpu_per_node, g2.memory_gb_per_node) == (2, 96, 384)
    assert pools[("V100", 1)].gpu_memory_gb == 16
    assert all(p.price_on_demand == fleets.DEFAULT_PRICE_USD for p in site.pools)
    # The undisclosed model carries stated, assumed figures, never silently a real part's.
    assert settings.gpu_models["alibaba-G2"].board_power_w == 300
    text = out.read_text(encoding="utf-8")
    assert "ASSUMED" in text and "alibaba-G2: assumed V100-32GB-class" in text
    assert settings.latency.file is not None


def test_undisclosed_as_maps_to_a_known_model_and_needs_no_override(tmp_path: Path) -> None:
    out = _build(tmp_path, "openb", OPENB, "--undisclosed-as", "V100-32GB")
    settings = load_settings(out, env={})
    assert settings.gpu_models == {}
    big = [p for p in settings.sites[0].pools if p.gpu_model == "V100-32GB"]
    assert sorted((p.nodes, p.cpu_per_node) for p in big) == [(1, 96), (2, 96)]


def test_spot_maps_export_variants_and_assumes_memory_per_cpu(tmp_path: Path) -> None:
    out = _build(tmp_path, "spot", SPOT)
    settings = load_settings(out, env={})
    pools = {p.gpu_model: p for p in settings.sites[0].pools}
    assert set(pools) == {"H100", "A100-80GB", "alibaba-GPU-series-1"}
    assert pools["A100-80GB"].nodes == 2
    assert pools["H100"].memory_gb_per_node == 192 * fleets.SPOT_MEMORY_GB_PER_CPU
    assert settings.gpu_models["alibaba-GPU-series-1"].memory_gb == 80


def test_unknown_model_is_refused_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,8000,32768,1,X9\n", encoding="utf-8")
    assert fleets.main(["openb", str(src), str(tmp_path / "f.yaml")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert not (tmp_path / "f.yaml").exists()
    with pytest.raises(UnknownAlibabaModel):
        broker_model("G2", undisclosed_as="NOT-A-GPU")
