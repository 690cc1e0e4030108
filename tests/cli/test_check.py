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


def test_check_fails_a_site_whose_connector_settings_are_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid connector settings fail that site's check (exit 1, like a rejected credential);
    exit 2 is for a config file that does not load at all. A pasted token is named, not shown."""
    pasted = "k8s-token-pasted-into-the-config-0f3a"
    config = config_with(
        tmp_path,
        kind="kubernetes",
        pools=[],
        connector={"kubeconfig": "oslo.kubeconfig", "token": pasted},
    )
    assert main(["check", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(
        "oslo-private (kubernetes, credentials: unknown)\n"
        "  FAIL configuration: site oslo-private: invalid Kubernetes connector settings:\n"
        "  (connector): Value error, inline credentials (token) are not accepted: name them by "
        "reference, with a kubeconfig file (kubeconfig: path) or in_cluster: true\n"
        "       fix: the site's connector: settings do not validate; the message names each field\n"
    )
    assert "sanjose-private (sim, credentials: none; lacks provision)\n  ok   inventory" in out
    assert pasted not in out + err


def test_check_fails_a_site_whose_kubeconfig_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_with(
        tmp_path, kind="kubernetes", pools=[], connector={"kubeconfig": "missing.kubeconfig"}
    )
    assert main(["check", "--config", str(config), "--site", "oslo-private", "--json"]) == 1
    (site,) = json.loads(capsys.readouterr().out)
    path = tmp_path / "missing.kubeconfig"
    assert (site["site"], site["ok"]) == ("oslo-private", False)
    assert site["credentials"] == f"kubeconfig {path}"
    assert site["checks"][0] == {
        "name": "api",
        "ok": False,
        "detail": f"oslo-private: cannot load credentials from kubeconfig {path}: "
        "No such file or directory",
        "hint": "the credentials file or context is wrong: fix the path (relative paths are "
        "from the config file) or the context name, or put the exec plugin on PATH",
    }
    assert not any(c["ok"] for c in site["checks"])
