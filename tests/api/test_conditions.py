"""Why a job waits, through the HTTP API, on SQLite and PostgreSQL (issue 15, section 1):
the quota regression, a job's condition from waiting to placed, and `GET .../explain`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.service import create_app
from tests.conftest import ADMIN, NLP, VISION, fast_settings, job_body, wait_for_state

Client = TestClient[Any, Any]

# vision-team may hold 2 GPUs of P2 and no more
CAPPED = {"vision-team": {"P2": {"nominal": 2, "borrowing_limit": 0}}}


@pytest.fixture
async def quota_client(
    aiohttp_client: Any, database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Client]:
    quotas = getattr(request, "param", CAPPED)
    app = create_app(fast_settings(database_url, **{"scheduler.quotas": quotas}))
    cli: Client = await aiohttp_client(app)
    yield cli
    await cli.close()


async def submit(client: Client, body: dict[str, Any], headers: dict[str, str] = VISION) -> str:
    resp = await client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    return job_id


async def until_condition(client: Client, job_id: str, reason: str) -> dict[str, Any]:
    """The job once its condition has `reason` (the loop writes it after its pass)."""
    for _ in range(300):
        body: dict[str, Any] = await (await client.get(f"/v1/jobs/{job_id}", headers=VISION)).json()
        if (body.get("condition") or {}).get("reason") == reason:
            return body
        await asyncio.sleep(0.05)  # the scheduler's next pass
    pytest.fail(f"job {job_id} never had condition {reason}: {body}")


P1_L4 = job_body(
    name="chat",
    priority="P1",
    kind="inference",
    resources={"gpus": 1, "gpu_models": ["L4"]},
    estimated_duration_s=3600,
)


@pytest.mark.parametrize(
    "quota_client", [{"nlp-team": {"P2": 8, "P3": 4}}], indirect=True, ids=["others-only"]
)
async def test_p1_without_a_quota_entry_is_placed_on_an_idle_fleet(quota_client: Client) -> None:
    """The bug seen live: with quotas for other tenants only, a P1 1×L4 job stayed pending
    forever ("pending (submitted)") while placements:explain named its site."""
    job_id = await submit(quota_client, P1_L4)
    placed = await wait_for_state(
        quota_client, job_id, {"scheduled", "running", "succeeded"}, headers=VISION
    )
    assert placed["placement"]["pool_id"].split("/")[1].startswith("L4")
    assert placed["condition"] is None


async def test_a_quota_wait_is_the_jobs_condition_until_capacity_frees(
    quota_client: Client,
) -> None:
    first = await submit(quota_client, job_body(estimated_duration_s=360000))
    await wait_for_state(quota_client, first, {"running"}, headers=VISION)
    second = await submit(quota_client, job_body(name="second"))

    waiting = await until_condition(quota_client, second, "QuotaCapReached")
    assert waiting["state"] == "pending"
    c = waiting["condition"]
    assert c["type"] == "Waiting"
    assert "tenant vision-team holds 2 GPUs of P2 (nominal 2, cap 2)" in c["message"]
    assert "would exceed its cap of 2" in c["message"]
    assert c["since"]
    listed = await (await quota_client.get("/v1/jobs?state=pending", headers=VISION)).json()
    assert [j["condition"]["reason"] for j in listed["items"] if j["id"] == second] == [
        "QuotaCapReached"
    ]

    explained = await (await quota_client.get(f"/v1/jobs/{second}/explain", headers=VISION)).json()
    assert explained["outcome"] == "wait"
    assert explained["reason"] == "QuotaCapReached"
    q = explained["quota"]
    assert (q["allowed"], q["nominal"], q["cap"], q["used"]) == (False, 2, 2, 2)
    assert q["free"] is None  # how full the fleet is stays with operators
    assert explained["standing"]["position"] >= 1
    assert explained["preemption"].startswith("not tried")
    as_admin = await (await quota_client.get(f"/v1/jobs/{second}/explain", headers=ADMIN)).json()
    assert as_admin["quota"]["free"] is not None

    await quota_client.delete(f"/v1/jobs/{first}", headers=VISION)
    placed = await wait_for_state(quota_client, second, {"scheduled", "running"}, headers=VISION)
    assert placed["condition"] is None


async def test_explain_is_tenant_scoped_and_only_for_waiting_jobs(quota_client: Client) -> None:
    job_id = await submit(quota_client, job_body(estimated_duration_s=360000))
    await wait_for_state(quota_client, job_id, {"running"}, headers=VISION)

    other = await quota_client.get(f"/v1/jobs/{job_id}/explain", headers=NLP)
    assert other.status == 404
    assert other.content_type == "application/problem+json"
    running = await quota_client.get(f"/v1/jobs/{job_id}/explain", headers=VISION)
    assert running.status == 409
    problem = await running.json()
    assert problem["type"].endswith("/job-not-waiting")
    assert "is running" in problem["detail"]
    await quota_client.delete(f"/v1/jobs/{job_id}", headers=VISION)
