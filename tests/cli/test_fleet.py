"""`broker inventory`, `broker sites` and `broker explain` against the demo fleet."""

from __future__ import annotations

import json
from pathlib import Path

JOBS = Path(__file__).resolve().parents[2] / "config" / "jobs"
DEMO_SITES = {
    "oslo-private",
    "sanjose-private",
    "aws-us-east-1",
    "gcp-europe-north1",
    "gcp-us-central1",
}


def test_inventory_table_lists_every_pool(cli, broker) -> None:
    result = cli("inventory", user="admin")

    assert result.code == 0, result.err
    assert result.out.splitlines()[0].split() == [
        "SITE",
        "GPU",
        "MEM",
        "TOTAL",
        "ALLOC",
        "FREE",
        "$/GPU-H",
        "gCO2/kWh",
        "HEALTH",
    ]
    rows = {(r[0], r[1]): r for r in result.rows()}
    assert {site for site, _ in rows} == DEMO_SITES
    assert len(rows) == 9
    oslo = rows[("oslo-private", "A100-80GB")]
    assert (oslo[2], oslo[3], oslo[6], oslo[8]) == ("80G", "32", "1.40", "healthy")
    status, api = broker.request("GET", "/v1/inventory", user="admin")
    assert status == 200
    intensity = {r["site"]: r["carbon_intensity_gco2_per_kwh"] for r in api["items"]}
    assert oslo[7] == f"{intensity['oslo-private']:.0f}"


def test_inventory_needs_the_operator_role(cli) -> None:
    result = cli("inventory", user="vision")

    assert result.code == 1
    assert result.out == ""
    assert result.err == "broker: Forbidden: this needs the operator role\n"


def test_sites_table_and_json(cli, broker) -> None:
    table = cli("sites")
    as_json = cli("sites", "--json")

    assert table.code == 0, table.err
    rows = {r[0]: r for r in table.rows()}
    assert set(rows) == DEMO_SITES
    assert rows["oslo-private"][1:] == [
        "sim",
        "oslo",
        "aws:eu-north-1",
        "NO",
        "yes",
        "1.15",
        "healthy",
    ]
    assert json.loads(as_json.out) == broker.request("GET", "/v1/sites")[1]


def test_explain_shows_the_winner_and_the_rejections(cli) -> None:
    result = cli("explain", str(JOBS / "train-resnet.yaml"))

    assert result.code == 0, result.err
    head, candidates, rejected = result.out.split("\n\n")
    assert head.splitlines()[0] == "winner: oslo-private (oslo-private/A100-80GB-0), score 0.0000"
    ranked = [line.split() for line in candidates.splitlines()[2:]]
    assert [r[0] for r in ranked] == ["1", "2", "3", "4"]
    assert ranked[0][1:3] == ["oslo-private", "oslo-private/A100-80GB-0"]
    assert {r[1] for r in ranked} == {
        "oslo-private",
        "sanjose-private",
        "gcp-europe-north1",
        "aws-us-east-1",
    }  # the pools with A100-80GB or H100
    reasons = {(r.split()[1], r.split()[2]) for r in rejected.splitlines()[2:]}
    assert ("oslo-private/L4-1", "gpu_model") in reasons
    assert ("sanjose-private/T4-1", "gpu_model") in reasons


def test_explain_from_stdin_as_json_names_the_latency_rejection(cli) -> None:
    body = (JOBS / "chat-inference.yaml").read_text()

    result = cli("explain", "-", "--json", stdin=body)

    assert result.code == 0, result.err
    ev = json.loads(result.out)
    assert ev["winner"]["site"] == "aws-us-east-1"
    assert ev["winner"]["latency_ms"] == 0.0
    slo = [r for r in ev["rejected"] if r["reason"] == "latency_slo"]
    assert "oslo-private" in {r["site"] for r in slo}
