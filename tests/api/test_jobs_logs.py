"""`GET /v1/jobs/{id}/logs` on the demo fleet: synthetic output, tail, follow, tenancy."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, NLP, VISION, job_body, wait_for_state

Client = TestClient[Any, Any]


async def submit(client: Client, **overrides: Any) -> str:
    resp = await client.post("/v1/jobs", json=job_body(**overrides), headers=VISION)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def test_a_finished_job_s_output_with_tail(client: Client) -> None:
    job_id = await submit(client)
    await wait_for_state(client, job_id, {"succeeded"}, headers=VISION)

    resp = await client.get(f"/v1/jobs/{job_id}/logs", headers=VISION)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    lines = (await resp.text()).splitlines()
    assert "[sim]" in lines[0] and f"job {job_id}" in lines[0]
    assert lines[-1].endswith("exited with code 0")
    assert any("progress 50%" in x for x in lines)

    resp = await client.get(f"/v1/jobs/{job_id}/logs?tail=2", headers=VISION)
    assert (await resp.text()).splitlines() == lines[-2:]
    resp = await client.get(f"/v1/jobs/{job_id}/logs?tail=0", headers=ADMIN)  # operators too
    assert resp.status == 200 and await resp.text() == ""


async def test_follow_streams_until_the_run_ends(client: Client) -> None:
    job_id = await submit(client, estimated_duration_s=7200)  # two simulated seconds
    await wait_for_state(client, job_id, {"running"}, headers=VISION)

    resp = await client.get(f"/v1/jobs/{job_id}/logs?follow=true&tail=0", headers=VISION)
    assert resp.status == 200
    text = await asyncio.wait_for(resp.text(), 15)  # the response ends with the run
    lines = text.splitlines()
    assert lines[-1].endswith("exited with code 0")
    assert any("progress 90%" in x for x in lines)


async def test_tenancy_limits_and_a_job_that_never_ran(client: Client) -> None:
    job_id = await submit(client)
    other = await client.get(f"/v1/jobs/{job_id}/logs", headers=NLP)
    assert other.status == 404  # another tenant's job does not exist for them

    too_many = await client.get(f"/v1/jobs/{job_id}/logs?tail=10001", headers=VISION)
    assert too_many.status == 422
    bad = await client.get(f"/v1/jobs/{job_id}/logs?follow=maybe", headers=VISION)
    assert bad.status == 422
    unknown = await client.get(f"/v1/jobs/{job_id}/logs?since=1h", headers=VISION)
    assert unknown.status == 422

    # A job that can never be placed (a deadline far out keeps it deferred) has no output.
    waiting = await submit(client, priority="P3", resources={"gpus": 2, "gpu_models": ["H100"]})
    cancel = await client.delete(f"/v1/jobs/{waiting}", headers=VISION)
    assert cancel.status == 200
    body = await cancel.json()
    if body["placement"] is None:
        never = await client.get(f"/v1/jobs/{waiting}/logs", headers=VISION)
        assert never.status == 409
        problem = await never.json()
        assert problem["type"].endswith("job-never-ran")
