"""`broker submit` and `broker jobs ...` against a running broker."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
JOB_ID = re.compile(r"^job-[0-9a-f]{32}$")
TRAIN = str(REPO / "config" / "jobs" / "train-resnet.yaml")


def test_submit_from_a_file_prints_a_short_table(cli, broker) -> None:
    result = cli("submit", TRAIN)

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["ID", "NAME", "PRIORITY", "STATE"]
    [[job_id, name, priority, state]] = [row.split() for row in rows]
    assert JOB_ID.match(job_id)
    assert (name, priority) == ("train-resnet50", "P2")
    assert state in {"pending", "scheduled", "running"}
    status, job = broker.request("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert job["spec"]["resources"]["gpus"] == 4
    assert job["spec"]["resources"]["gpu_models"] == ["A100-80GB", "H100"]


def test_submit_from_stdin_with_json_output_matches_the_api(cli, broker, make_job) -> None:
    body = make_job("from-stdin", workload={"image": "busybox:1.36", "env": {"A": "1"}})

    result = cli("submit", "-", "--json", stdin=yaml.safe_dump(body))

    assert result.code == 0, result.err
    job = json.loads(result.out)
    assert JOB_ID.match(job["id"])
    assert job["tenant"] == "vision-team"
    assert job["name"] == "from-stdin"
    assert job["spec"]["workload"] == {"image": "busybox:1.36", "command": [], "env": {"A": "1"}}
    status, stored = broker.request("GET", f"/v1/jobs/{job['id']}")
    assert status == 200
    assert (stored["created_at"], stored["spec"]) == (job["created_at"], job["spec"])
    assert list(job) == [
        "id",
        "tenant",
        "name",
        "priority",
        "kind",
        "state",
        "state_reason",
        "preemptible",
        "created_at",
        "updated_at",
        "spec",
        "placement",
        "events",
        "condition",
    ]  # the API's order, kept


def test_submit_json_on_stdin(cli, make_job) -> None:
    result = cli("submit", "-", stdin=json.dumps(make_job("json-stdin")))

    assert result.code == 0, result.err
    assert result.rows()[0][1] == "json-stdin"


def test_idempotency_key_replay_returns_the_same_job(cli, make_job) -> None:
    body = yaml.safe_dump(make_job("idempotent"))

    first = cli("submit", "-", "--json", "--idempotency-key", "cli-test-key-1", stdin=body)
    again = cli("submit", "-", "--json", "--idempotency-key", "cli-test-key-1", stdin=body)
    other = cli("submit", "-", "--json", "--idempotency-key", "cli-test-key-2", stdin=body)

    assert (first.code, again.code, other.code) == (0, 0, 0)
    assert json.loads(again.out)["id"] == json.loads(first.out)["id"]
    assert json.loads(other.out)["id"] != json.loads(first.out)["id"]
    assert "cli-test-key-1" in again.err and "used before" in again.err
    assert first.err == ""


def test_watch_exits_0_on_success_and_show_has_the_events(cli, broker, make_job) -> None:
    job = broker.submit(make_job("watch-ok"))

    watch = cli("jobs", "watch", job["id"], "--interval", "0.2", "--timeout", "20")

    assert watch.code == 0, watch.err
    transitions = [line.split()[2:5] for line in watch.out.splitlines()]
    assert transitions == [
        ["-", "->", "pending"],
        ["pending", "->", "scheduled"],
        ["scheduled", "->", "running"],
        ["running", "->", "succeeded"],
    ]
    show = cli("jobs", "show", job["id"])
    assert show.code == 0, show.err
    assert re.search(r"^STATE\s+succeeded \(completed\)$", show.out, re.M)
    placement = show.out.split("PLACEMENT\n")[1].splitlines()[1].split()
    status, stored = broker.request("GET", f"/v1/jobs/{job['id']}")
    assert status == 200
    assert placement[:3] == [stored["placement"]["site"], stored["placement"]["pool_id"], "1"]
    events = show.out.split("EVENTS\n")[1]
    assert "running -> succeeded  completed  exit code 0" in events
    assert "pending -> scheduled  placed" in events
    as_json = cli("jobs", "show", job["id"], "--json")
    assert json.loads(as_json.out) == stored
    cancel = cli("jobs", "cancel", job["id"])
    assert cancel.code == 1
    assert cancel.err == (
        f"broker: The job already finished: job {job['id']} is succeeded; "
        "there is nothing to cancel\n"
    )


def test_watch_exits_1_when_the_job_fails(cli, broker, make_job) -> None:
    job = broker.submit(
        make_job("watch-fail", workload={"image": "busybox:1.36", "env": {"SIM_EXIT_CODE": "3"}})
    )

    watch = cli("jobs", "watch", job["id"], "--interval", "0.2", "--timeout", "20", "--json")

    assert watch.code == 1
    events = [json.loads(line) for line in watch.out.splitlines()]
    assert events[-1]["to_state"] == "failed"
    assert events[-1]["detail"] == "container exited with code 3"
    assert f"job {job['id']} failed" in watch.err


def test_watch_times_out_with_3_then_cancel(cli, broker, make_job) -> None:
    job = broker.submit(make_job("long-one", estimated_duration_s=36000))  # a minute of sim

    watch = cli("jobs", "watch", job["id"], "--interval", "0.2", "--timeout", "0.6")
    cancel = cli("jobs", "cancel", job["id"])
    again = cli("jobs", "cancel", job["id"])
    after = cli("jobs", "watch", job["id"])

    assert watch.code == 3
    assert "still" in watch.err and "after 0.6s" in watch.err
    assert cancel.code == 0, cancel.err
    assert cancel.rows() == [[job["id"], "long-one", "P3", "cancelled"]]
    assert again.code == 0, again.err  # cancelling a cancelled job is a no-op
    assert again.rows() == [[job["id"], "long-one", "P3", "cancelled"]]
    assert after.code == 1  # a cancelled job ends the watch at once
    assert after.out.splitlines()[-1].split()[2:5] == ["running", "->", "cancelled"]


def test_list_filters_and_pages(cli, broker, make_job) -> None:
    # nlp-team is this test's tenant alone, so its listing is exactly what it submits.
    kinds = ["training", "experiment", "training", "experiment", "training"]
    ids = [
        broker.submit(
            make_job(
                f"page-{i}",
                kind=kind,
                estimated_duration_s=36000,
                priority="P2" if kind == "training" else "P3",
            ),
            user="nlp",
        )["id"]
        for i, kind in enumerate(kinds)
    ]
    status, _ = broker.request("DELETE", f"/v1/jobs/{ids[0]}", user="nlp")
    assert status == 200
    newest_first = ids[::-1]

    paged = cli("jobs", "list", "--all", "--limit", "2", "--json", user="nlp")
    table = cli("jobs", "list", "--all", "--limit", "2", user="nlp")
    first_page = cli("jobs", "list", "--limit", "2", user="nlp")
    experiments = cli("jobs", "list", "--kind", "experiment", user="nlp")
    p2 = cli("jobs", "list", "--priority", "P2", "--json", user="nlp")
    ended = cli("jobs", "list", "--state", "cancelled,failed", "--json", user="nlp")

    assert paged.code == 0, paged.err
    assert [j["id"] for j in json.loads(paged.out)["items"]] == newest_first
    assert json.loads(paged.out)["next_cursor"] is None
    assert table.out.splitlines()[0].split() == [
        "ID",
        "NAME",
        "TENANT",
        "PRIORITY",
        "KIND",
        "STATE",
        "AGE",
    ]
    assert [r[0] for r in table.rows()] == newest_first
    assert {r[2] for r in table.rows()} == {"nlp-team"}
    assert [r[0] for r in first_page.rows()] == newest_first[:2]
    assert "--all" in first_page.err
    assert [(r[0], r[4]) for r in experiments.rows()] == [
        (ids[3], "experiment"),
        (ids[1], "experiment"),
    ]
    assert [j["id"] for j in json.loads(p2.out)["items"]] == [ids[4], ids[2], ids[0]]
    assert [j["id"] for j in json.loads(ended.out)["items"]] == [ids[0]]


def test_example_jobs_are_accepted(cli) -> None:
    for path in sorted((REPO / "config" / "jobs").glob("*.yaml")):
        result = cli("submit", str(path), "--json")
        assert result.code == 0, f"{path.name}: {result.err}"
        assert json.loads(result.out)["name"] == yaml.safe_load(path.read_text())["name"]


def test_a_yaml_timestamp_is_sent_as_rfc3339(cli, make_job) -> None:
    text = yaml.safe_dump(make_job("with-deadline")) + "deadline: 2099-01-01T00:00:00Z\n"

    result = cli("submit", "-", "--json", stdin=text)

    assert result.code == 0, result.err
    assert json.loads(result.out)["spec"]["deadline"] == "2099-01-01T00:00:00Z"


def test_jobs_explain_of_a_running_job_says_why_not_and_exits_1(cli, broker, make_job) -> None:
    job = broker.submit(make_job("explained", estimated_duration_s=36000))
    for _ in range(100):
        if broker.request("GET", f"/v1/jobs/{job['id']}")[1]["state"] == "running":
            break
        time.sleep(0.05)

    explain = cli("jobs", "explain", job["id"])
    show = cli("jobs", "show", job["id"])
    missing = cli("jobs", "explain", "job-" + "0" * 32)
    cli("jobs", "cancel", job["id"])

    assert explain.code == 1
    assert explain.err.startswith("broker: ") and "Traceback" not in explain.err
    assert "is running" in explain.err
    assert show.code == 0, show.err
    assert re.search(r"^WHY +-$", show.out, re.M)  # running: no condition
    assert missing.code == 1 and missing.err.startswith("broker: ")
