"""`broker services ...` against a running broker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SVC_ID = re.compile(r"^svc-[0-9a-f]{20}$")
CHAT = REPO / "config" / "services" / "chat.yaml"


def test_create_show_update_watch_delete(cli, broker, tmp_path: Path) -> None:
    body = yaml.safe_load(CHAT.read_text())
    body["workload"]["env"] = {"SIM_LOAD": "10"}
    body["name"] = "cli-chat"
    created = cli("services", "create", "-", stdin=yaml.safe_dump(body))
    assert created.code == 0, created.err
    [[svc_id, name, priority, state, generation, *_]] = created.rows()
    assert SVC_ID.match(svc_id) and (name, priority, state, generation) == (
        "cli-chat",
        "P1",
        "active",
        "1",
    )

    watched = cli("services", "watch", svc_id, "--interval", "0.2", "--timeout", "3")
    assert watched.code == 3, watched.err  # still there when the timeout passed
    assert "desired" in watched.out and "rps" in watched.out

    shown = cli("services", "show", svc_id, "--json")
    assert shown.code == 0, shown.err
    shown_body = json.loads(shown.out)
    assert shown_body["id"] == svc_id and shown_body["spec"]["name"] == "cli-chat"
    assert shown_body["decisions"], shown_body  # the autoscaler said what it wanted and why

    patch = tmp_path / "patch.yaml"
    patch.write_text("max_replicas: 2\n")
    updated = cli("services", "update", svc_id, str(patch), "--json")
    assert updated.code == 0, updated.err
    assert json.loads(updated.out)["spec"]["max_replicas"] == 2

    listed = cli("services", "list")
    assert svc_id in listed.out

    deleted = cli("services", "delete", svc_id)
    assert deleted.code == 0, deleted.err
    assert "deleting" in deleted.out


def test_bad_input_is_one_line_and_a_non_zero_exit(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmin_replicas: 3\nmax_replicas: 1\n")
    result = cli("services", "create", str(bad))
    assert result.code == 1
    assert result.err.startswith("broker: ") and "Traceback" not in result.err
    missing = cli("services", "show", "svc-00000000000000000000")
    assert missing.code == 1 and "no service" in missing.err
