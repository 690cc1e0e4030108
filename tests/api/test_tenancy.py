"""What a tenant may not see of another (issue 13, item 6): a preemption's events name the
preemptor only to its own tenant (and to operators); the placement dry run shows users
feasibility and ranking but not how full pools are; `/metrics` takes an operator's token
unless `auth.metrics_token_required` is off. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config import Settings, load_settings
from tests.api.test_errors import problem
from tests.conftest import ADMIN, DEMO_CONFIG, NLP, VISION, fast_settings, job_body, wait_for_state

Client = TestClient[Any, Any]

# The demo fleet's only T4 pool: sanjose-private, 4 nodes of 4 GPUs.
T4_POOL = {"gpus": 4, "nodes": 4, "gpu_models": ["T4"]}
LONG = 90 * 24 * 3600  # runs for a while even at the fast simulator's speed


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The demo fleet (for `client`), with preemption allowed at once and `/metrics` behind
    a token as outside the demo."""
    return fast_settings(
        database_url, **{"scheduler.min_runtime_s": 0, "auth.metrics_token_required": True}
    )


async def _fill_t4(client: Client) -> str:
    """A running P3 job of vision-team on every node of the T4 pool; its id."""
    body = job_body(
        name="exp-fill",
        priority="P3",
        kind="experiment",
        resources=T4_POOL,
        estimated_duration_s=LONG,
    )
    resp = await client.post("/v1/jobs", json=body, headers=VISION)
    assert resp.status == 201, await resp.text()
    job_id: str = (await resp.json())["id"]
    await wait_for_state(client, job_id, {"running"}, headers=VISION)
    return job_id


async def _preempted_event(client: Client, job_id: str, headers: dict[str, str]) -> str:
    """The detail of the job's preemption event, once it has one."""
    for _ in range(300):
        resp = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert resp.status == 200
        events = (await resp.json())["events"]
        found = [e["detail"] for e in events if e["to_state"] == "preempted"]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} was not preempted: {events}")


@pytest.mark.parametrize("preemptor", [NLP, VISION], ids=["other-tenant", "same-tenant"])
async def test_a_preemption_names_the_preemptor_only_to_its_tenant(
    client: Client, preemptor: dict[str, str]
) -> None:
    victim = await _fill_t4(client)
    body = job_body(
        name="urgent",
        priority="P1",
        kind="inference",
        resources={"gpus": 4, "gpu_models": ["T4"]},
        estimated_duration_s=LONG,
    )
    resp = await client.post("/v1/jobs", json=body, headers=preemptor)
    assert resp.status == 201, await resp.text()
    urgent = (await resp.json())["id"]

    # operators see the record as the scheduler wrote it
    as_admin = await _preempted_event(client, victim, ADMIN)
    assert as_admin.startswith(f"for P1 job {urgent}: preempting 1 job(s) {victim}"), as_admin

    as_owner = await _preempted_event(client, victim, VISION)
    shown = await (await client.get(f"/v1/jobs/{victim}", headers=VISION)).text()
    if preemptor is NLP:
        assert as_owner == "preempted for a job of a higher tier"
        assert urgent not in shown and "nlp-team" not in shown
    else:
        assert as_owner == f"preempted for your P1 job {urgent}"


async def test_explain_shows_users_no_occupancy_and_operators_all(client: Client) -> None:
    await _fill_t4(client)
    t4 = job_body(resources={"gpus": 1, "gpu_models": ["T4"]})
    l4 = job_body(resources={"gpus": 1, "gpu_models": ["L4"]})

    def t4_rejection(explained: dict[str, Any]) -> dict[str, Any]:
        return next(r for r in explained["rejected"] if r["reason"] == "capacity")

    resp = await client.post("/v1/placements:explain", json=t4, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    assert "GPUs free" in t4_rejection(await resp.json())["detail"]
    resp = await client.post("/v1/placements:explain", json=l4, headers=ADMIN)
    assert all(isinstance(c["packing_term"], float) for c in (await resp.json())["candidates"])

    resp = await client.post("/v1/placements:explain", json=t4, headers=NLP)
    assert resp.status == 200, await resp.text()
    rejection = t4_rejection(await resp.json())
    assert rejection["site"] == "sanjose-private"  # feasibility: which pool, and why not
    assert not any(ch.isdigit() for ch in rejection["detail"]), rejection
    resp = await client.post("/v1/placements:explain", json=l4, headers=NLP)
    explained = await resp.json()
    assert explained["candidates"], explained  # ranking: every feasible pool, ranked
    assert [c["rank"] for c in explained["candidates"]] == list(
        range(1, len(explained["candidates"]) + 1)
    )
    assert all(c["packing_term"] is None for c in explained["candidates"])
    assert "free" not in json.dumps(explained["rejected"]).lower()


async def test_metrics_need_an_operator_token_when_required(client: Client) -> None:
    await problem(await client.get("/metrics"), 401, "unauthorized")
    bad = {"Authorization": "Bearer not-a-token"}
    await problem(await client.get("/metrics", headers=bad), 401, "unauthorized")
    await problem(await client.get("/metrics", headers=VISION), 403, "forbidden")
    resp = await client.get("/metrics", headers=ADMIN)  # as Prometheus sends it
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "broker_jobs" in await resp.text()


def test_metrics_token_is_required_by_default_and_off_only_in_the_demo() -> None:
    # `tests/api/test_ops.py` reads /metrics without a token under the demo config
    assert load_settings(DEMO_CONFIG, env={}).auth.metrics_token_required is False
    example = load_settings(DEMO_CONFIG.parent / "example.yaml", env={})
    assert example.auth.metrics_token_required is True
