"""Bad input to `broker simulate`: one line `broker: <reason>` on stderr, exit 2, no traceback.

Most cases run the command in-process (an escaping exception fails the test by itself);
one runs it as a subprocess, which is what a user sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from broker.cli.main import main

REPO = Path(__file__).resolve().parents[2]
HEADER = (
    "job_id,submit_s,duration_s,gpus,gpu_fraction,nodes,gpu_models,tier,tenant,deadline_s,"
    "origin,preemptible,kind\n"
)
GOOD_TRACE = HEADER + "j1,0,3600,1,,1,H100,P2,t,,,,inference\n"
GOOD_FLEET = (
    "sites:\n"
    "  - {name: lab, kind: sim, region: r, grid_zone: SE,\n"
    "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
    "              price_on_demand: 3.0}]}\n"
)
GOOD_CARBON = "timestamp_utc,region,gco2_per_kwh\n2022-03-07T00:00:00+00:00,SE,20\n"


def run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    trace: str | bytes | None = GOOD_TRACE,
    fleet: str | None = GOOD_FLEET,
    carbon: str | bytes | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Run `broker simulate` on these file contents (None: the file does not exist)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in (("trace.csv", trace), ("fleet.yaml", fleet), ("carbon.csv", carbon)):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content, encoding="utf-8")
        paths[name] = str(path)
    args = ["simulate", "--trace", paths["trace.csv"], "--fleet", paths["fleet.yaml"]]
    if carbon is not None or "--carbon-missing" in extra:
        args += ["--carbon", paths["carbon.csv"]]
    args += [a for a in extra if a != "--carbon-missing"]
    args += ["--out", str(tmp_path / "out"), "--quiet", "--policy", "fifo"]
    code = main(args)
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("broker: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_good_inputs_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(tmp_path, capsys, carbon=GOOD_CARBON)
    assert code == 0, err


def test_a_missing_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line(*run(tmp_path, capsys, trace=None), "cannot read trace", "No such file")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (HEADER + "j1,0,forever,1,,1,H100,P2,t,,,,training\n", "column 'duration_s'"),
        ("job_id,submit_s\nj1,0\n", "missing column(s)"),
        (HEADER + "j1,0,3600\n", "expected 13 fields"),
        (b"\xff\xfe\x00garbage\n", "not UTF-8"),
        ("", "empty file"),
    ],
    ids=["bad-cell", "bad-header", "short-row", "binary", "empty"],
)
def test_a_malformed_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, needle: str
) -> None:
    assert_one_line(*run(tmp_path, capsys, trace=content), needle)


def test_a_missing_carbon_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(tmp_path, capsys, extra=("--carbon-missing",))
    assert_one_line(code, err, "cannot read carbon file", "carbon.csv", "No such file")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("time,zone,value\n2022-03-07T00:00:00+00:00,SE,20\n", "expected columns"),
        (GOOD_CARBON + "2022-03-07T01:00:00+00:00\n", "expected 3 fields, got 1"),
        (GOOD_CARBON + "yesterday,SE,20\n", "bad timestamp"),
        (GOOD_CARBON + "2022-03-07T01:00:00+00:00,SE,lots\n", "bad intensity"),
        (GOOD_CARBON + "2022-03-07T01:00:00,SE,20\n", "naive timestamp"),
        (b"\xff\xfe\x00\x01", "not UTF-8"),
    ],
    ids=["header", "short-row", "timestamp", "value", "naive", "binary"],
)
def test_a_malformed_carbon_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, needle: str
) -> None:
    assert_one_line(*run(tmp_path, capsys, carbon=content), needle)


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ("cannot read config", "No such file")),
        ("sites: [", ("not valid YAML",)),
        # several problems, one line each in the settings' error: joined into one
        ("sites: [{name: lab}]\nhttp: {port: -1}\n", ("sites.0.kind", "; ", "http.port")),
        (GOOD_FLEET.replace("H100", "Z9000"), ("'Z9000'", "site 'lab' pool 0", "gpu_models")),
        ("latency: {file: nowhere.csv}\n" + GOOD_FLEET, ("cannot read latency file",)),
    ],
    ids=["missing", "yaml", "schema", "unknown-model", "latency"],
)
def test_a_bad_fleet_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, needles: tuple[str]
) -> None:
    assert_one_line(*run(tmp_path, capsys, fleet=content), *needles)


def test_a_fleet_with_power_overrides_replays_at_the_configured_power(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gpu_models` reaches the engine and the energy figures: a replaced row (H100 at
    350 W instead of 700 W) halves the energy, and a model only the fleet knows runs."""
    ten_hours = GOOD_TRACE.replace(",3600,", ",36000,")
    halved_fleet = "gpu_models: {H100: {board_power_w: 350, memory_gb: 80}}\n" + GOOD_FLEET
    own_fleet = "gpu_models: {LAB-X1: {board_power_w: 350, memory_gb: 80}}\n" + GOOD_FLEET
    runs = {
        "shipped": (GOOD_FLEET, ten_hours),
        "halved": (halved_fleet, ten_hours),
        "own": (
            own_fleet.replace("gpu_model: H100", "gpu_model: LAB-X1"),
            ten_hours.replace(",H100,", ",LAB-X1,"),
        ),
    }
    energy = {}
    for name, (fleet, trace) in runs.items():
        code, err = run(tmp_path / name, capsys, fleet=fleet, trace=trace)
        assert code == 0, err
        summary = json.loads((tmp_path / name / "out" / "summary.json").read_text())
        energy[name] = summary["policies"]["fifo"]["energy_kwh"]
    # ten H100 hours at 80 % utilisation and PUE 1.2: 6.72 kWh at 700 W, 3.36 at 350 W
    assert energy == {"shipped": 6.7, "halved": 3.4, "own": 3.4}


@pytest.mark.parametrize(
    ("start", "needle"),
    [
        ("2022-03-07T00:00:00", "has no UTC offset"),
        ("2022-03-07", "has no UTC offset"),
        ("next monday", "is not an RFC 3339 time"),
    ],
)
def test_start_needs_a_utc_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str, needle: str
) -> None:
    assert_one_line(*run(tmp_path, capsys, extra=("--start", start)), needle, repr(start))


def test_a_start_with_an_offset_is_taken_as_that_instant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(tmp_path, capsys, extra=("--start", "2022-03-07T02:00:00+02:00"))
    assert code == 0, err
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert '"start": "2022-03-07T00:00:00+00:00"' in summary


def test_the_installed_command_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(GOOD_FLEET)
    (tmp_path / "trace.csv").write_text(HEADER + "j1,0,3600\n")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "broker.cli.main", "simulate"),
            *("--trace", "trace.csv", "--fleet", "fleet.yaml", "--quiet"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_line(result.returncode, result.stderr, "trace.csv: line 2")
    assert result.stdout == ""
