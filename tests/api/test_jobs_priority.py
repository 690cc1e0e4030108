"""`PATCH /v1/jobs/{id}`: a job's priority changes while it waits or runs, nothing else."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, NLP, VISION, job_body, wait_for_state

Client = TestClient[Any, Any]
MERGE = {"Content-Type": "application/merge-patch+json"}


async def submit(client: Client, **overrides: Any) -> str:
    resp = await client.post("/v1/jobs", json=job_body(**overrides), headers=VISION)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def test_a_running_job_becomes_p1_and_no_longer_preemptible(client: Client) -> None:
    job_id = await submit(client, priority="P3", estimated_duration_s=360000)  # 100 s
    running = await wait_for_state(client, job_id, {"running"}, headers=VISION)
    assert running["preemptible"] is True

    resp = await client.patch(
        f"/v1/jobs/{job_id}", json={"priority": "P1"}, headers={**VISION, **MERGE}
    )
    assert resp.status == 200, await resp.text()
    job = await resp.json()
    assert job["priority"] == "P1" and job["preemptible"] is False
    assert job["state"] == "running"
    (event,) = [e for e in job["events"] if e["reason"] == "priority_changed"]
    assert event["from_state"] == event["to_state"] == "running"
    assert "P3 -> P1" in event["detail"]
    listed = await (await client.get("/v1/jobs?priority=P1", headers=VISION)).json()
    assert job_id in [j["id"] for j in listed["items"]]
    await client.delete(f"/v1/jobs/{job_id}", headers=VISION)


async def test_only_priority_may_change_and_only_by_its_tenant(client: Client) -> None:
    job_id = await submit(client)
    resp = await client.patch(
        f"/v1/jobs/{job_id}", json={"priority": "P1", "name": "x", "resources": {}}, headers=VISION
    )
    assert resp.status == 422
    fields = {e["field"] for e in (await resp.json())["errors"]}
    assert fields == {"name", "resources"}
    bad = await client.patch(f"/v1/jobs/{job_id}", json={"priority": "P0"}, headers=VISION)
    assert bad.status == 422
    other = await client.patch(f"/v1/jobs/{job_id}", json={"priority": "P1"}, headers=NLP)
    assert other.status == 404
    admin = await client.patch(f"/v1/jobs/{job_id}", json={"priority": "P1"}, headers=ADMIN)
    assert admin.status == 404  # the caller's tenant's jobs only


async def test_a_finished_job_keeps_its_priority(client: Client) -> None:
    job_id = await submit(client)
    await wait_for_state(client, job_id, {"succeeded"}, headers=VISION)
    resp = await client.patch(f"/v1/jobs/{job_id}", json={"priority": "P1"}, headers=VISION)
    assert resp.status == 409
    assert (await resp.json())["type"].endswith("job-already-finished")
