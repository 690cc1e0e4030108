"""`broker jobs logs` and `broker jobs update` against a running broker."""

from __future__ import annotations

import json
import time
from typing import Any


def started(broker: Any, job_id: str) -> None:
    """Wait until the job has started (a job that never ran has no output: 409)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, job = broker.request("GET", f"/v1/jobs/{job_id}")
        if (job.get("placement") or {}).get("started_at"):
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start")


def test_logs_follow_prints_the_run_until_it_ends(cli, broker, make_job) -> None:
    job = broker.submit(make_job("logs-follow", estimated_duration_s=1800))  # 3 wall seconds
    started(broker, job["id"])

    result = cli("jobs", "logs", job["id"], "--follow")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert any(f"job {job['id']}" in x for x in lines)
    assert lines[-1].endswith("exited with code 0")
    tail = cli("jobs", "logs", job["id"], "--tail", "1")
    assert tail.code == 0 and tail.out.splitlines() == lines[-1:]


def test_logs_of_another_tenant_s_job_is_not_found(cli, broker, make_job) -> None:
    job = broker.submit(make_job("logs-other"))
    result = cli("jobs", "logs", job["id"], user="nlp")
    assert result.code == 1
    assert "Not found" in result.err


def test_update_changes_the_priority(cli, broker, make_job) -> None:
    job = broker.submit(make_job("update-p1", estimated_duration_s=600000))
    result = cli("jobs", "update", job["id"], "--priority", "P1", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["priority"] == "P1"
    status, stored = broker.request("GET", f"/v1/jobs/{job['id']}")
    assert status == 200 and stored["priority"] == "P1"
    cli("jobs", "cancel", job["id"])
