"""`broker check`: every configured site's credentials and permissions, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from broker.cli.main import main
from tests.conftest import DEMO_CONFIG


def config_with(tmp_path: Path, **site_overrides: object) -> Path:
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["sites"][0].update(site_overrides)
    path = tmp_path / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_check_lists_every_site_and_exits_0_when_all_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--config", str(DEMO_CONFIG), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 5 and all(r["ok"] for r in out)
    assert {c["name"] for r in out for c in r["checks"]} == {"inventory"}


def test_check_of_one_site_and_of_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(DEMO_CONFIG), "--site", "oslo-private"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("oslo-private (sim, credentials: none; lacks provision)")
    assert "sanjose" not in out
    assert main(["check", "--config", str(DEMO_CONFIG), "--site", "nowhere"]) == 2
    assert "no such site in the config: nowhere" in capsys.readouterr().err
