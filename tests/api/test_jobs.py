"""The life of a job through the real HTTP stack, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.service import create_app
from carbon.performance import WorkloadClass, shipped_table
from tests.conftest import ADMIN, NLP, TOKENS, VISION, fast_settings, job_body, wait_for_state

Client = TestClient[Any, Any]


async def submit(
    client: Client, body: dict[str, Any], headers: dict[str, str] = VISION, **extra: str
) -> dict[str, Any]:
    resp = await client.post("/v1/jobs", json=body, headers={**headers, **extra})
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_job_runs_to_completion_with_every_transition_recorded(client: Client) -> None:
    job = await submit(client, job_body())
    assert job["state"] == "pending"
    assert job["tenant"] == "vision-team"  # from the token
    assert job["preemptible"] is False  # P2 default

    done = await wait_for_state(client, job["id"], {"succeeded"}, headers=VISION)
    path = [(e["from_state"], e["to_state"]) for e in done["events"]]
    assert path == [
        (None, "pending"),
        ("pending", "scheduled"),
        ("scheduled", "running"),
        ("running", "succeeded"),
    ]
    assert all(e["at"].endswith("Z") or e["at"].endswith("+00:00") for e in done["events"])
    placement = done["placement"]
    assert placement["gpus"] == 2
    assert placement["site"] in {
        "oslo-private",
        "sanjose-private",
        "aws-us-east-1",
        "gcp-europe-north1",
    }
    assert placement["started_at"] is not None and placement["ended_at"] is not None
    # the allocation was given back
    inv = await (await client.get("/v1/inventory", headers=ADMIN)).json()
    assert all(row["allocated_gpus"] == 0 for row in inv["items"])


async def test_placement_allocates_in_inventory_while_running(client: Client) -> None:
    job = await submit(client, job_body(estimated_duration_s=36000))  # 10 s simulated run
    running = await wait_for_state(client, job["id"], {"running"}, headers=VISION)
    pool = running["placement"]["pool_id"]
    inv = await (await client.get("/v1/inventory", headers=ADMIN)).json()
    row = next(r for r in inv["items"] if r["pool_id"] == pool)
    assert row["allocated_gpus"] == 2
    assert row["free_gpus"] == row["total_gpus"] - 2
    await client.delete(f"/v1/jobs/{job['id']}", headers=VISION)


async def test_failed_workload_is_failed_with_reason(client: Client) -> None:
    body = job_body(workload={"image": "busybox", "env": {"SIM_EXIT_CODE": "3"}})
    job = await submit(client, body)
    done = await wait_for_state(client, job["id"], {"failed", "succeeded"}, headers=VISION)
    assert done["state"] == "failed"
    assert done["events"][-1]["reason"] == "exit_code"
    assert "code 3" in done["events"][-1]["detail"]


async def test_cancel_is_idempotent_and_releases_capacity(client: Client) -> None:
    job = await submit(client, job_body(estimated_duration_s=360000))
    await wait_for_state(client, job["id"], {"running"}, headers=VISION)
    first = await client.delete(f"/v1/jobs/{job['id']}", headers=VISION)
    assert first.status == 200
    body = await first.json()
    assert body["state"] == "cancelled"
    assert body["placement"]["ended_at"] is not None
    second = await client.delete(f"/v1/jobs/{job['id']}", headers=VISION)
    assert second.status == 200
    again = await second.json()
    assert again["state"] == "cancelled"
    assert [e["to_state"] for e in again["events"]].count("cancelled") == 1
    inv = await (await client.get("/v1/inventory", headers=ADMIN)).json()
    assert all(row["allocated_gpus"] == 0 for row in inv["items"])


async def test_cancelling_a_finished_job_is_a_conflict(client: Client) -> None:
    job = await submit(client, job_body(estimated_duration_s=60))
    await wait_for_state(client, job["id"], {"succeeded"}, headers=VISION)
    resp = await client.delete(f"/v1/jobs/{job['id']}", headers=VISION)
    assert resp.status == 409
    assert (await resp.json())["type"] == "/problems/job-already-finished"


async def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    body = job_body(name="once")
    first = await submit(client, body, **{"Idempotency-Key": "k-123"})
    resp = await client.post("/v1/jobs", json=body, headers={**VISION, "Idempotency-Key": "k-123"})
    assert resp.status == 201
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert (await resp.json())["id"] == first["id"]
    # the same key from another tenant is another job
    other = await submit(client, body, headers=NLP, **{"Idempotency-Key": "k-123"})
    assert other["id"] != first["id"]
    page = await (await client.get("/v1/jobs?limit=500", headers=ADMIN)).json()
    assert len(page["items"]) == 2


async def test_reused_idempotency_key_with_other_body_is_409(client: Client) -> None:
    await submit(client, job_body(name="a"), **{"Idempotency-Key": "k-1"})
    resp = await client.post(
        "/v1/jobs", json=job_body(name="b"), headers={**VISION, "Idempotency-Key": "k-1"}
    )
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"] == "/problems/idempotency-key-reused"


async def test_concurrent_replays_of_one_key_create_one_job(client: Client) -> None:
    body = job_body(name="race")
    resps = await asyncio.gather(
        *(
            client.post("/v1/jobs", json=body, headers={**VISION, "Idempotency-Key": "race-1"})
            for _ in range(8)
        )
    )
    ids = {(await r.json())["id"] for r in resps}
    assert [r.status for r in resps] == [201] * 8
    assert len(ids) == 1


async def test_tenants_see_only_their_own_jobs(client: Client) -> None:
    mine = await submit(client, job_body(name="mine"), headers=VISION)
    theirs = await submit(client, job_body(name="theirs"), headers=NLP)
    resp = await client.get(f"/v1/jobs/{theirs['id']}", headers=VISION)
    assert resp.status == 404
    assert (await client.delete(f"/v1/jobs/{theirs['id']}", headers=VISION)).status == 404
    listed = await (await client.get("/v1/jobs", headers=VISION)).json()
    assert [j["id"] for j in listed["items"]] == [mine["id"]]
    everyone = await (await client.get("/v1/jobs", headers=ADMIN)).json()
    assert {j["id"] for j in everyone["items"]} == {mine["id"], theirs["id"]}


async def test_list_filters_and_cursor_pagination(client: Client) -> None:
    ids = []
    for i in range(7):
        prio = "P3" if i % 2 else "P2"
        kind = "experiment" if i % 2 else "training"
        job = await submit(
            client, job_body(name=f"j{i}", priority=prio, kind=kind, estimated_duration_s=360000)
        )
        ids.append(job["id"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/v1/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=VISION)).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each exactly once

    p3 = await (await client.get("/v1/jobs?priority=P3", headers=VISION)).json()
    assert {j["id"] for j in p3["items"]} == {ids[1], ids[3], ids[5]}
    both = await (
        await client.get("/v1/jobs?kind=experiment,training&priority=P2", headers=VISION)
    ).json()
    assert {j["id"] for j in both["items"]} == {ids[0], ids[2], ids[4], ids[6]}
    none = await (await client.get("/v1/jobs?state=succeeded", headers=VISION)).json()
    assert none["items"] == []
    for job_id in ids:
        await client.delete(f"/v1/jobs/{job_id}", headers=VISION)


async def test_p1_is_placed_before_waiting_lower_tiers(client: Client) -> None:
    # Fill every H100 with long P3 work, queue a P3 and then a P1 behind it; when one
    # H100 block frees, the P1 must get it although the P3 was queued first.
    fillers = [
        await submit(
            client,
            job_body(
                name=f"fill{i}",
                priority="P3",
                kind="experiment",
                resources={"gpus": 8, "gpu_models": ["H100"]},
                estimated_duration_s=3_600_000,
            ),
        )
        for i in range(5)
    ]
    for f in fillers:
        await wait_for_state(client, f["id"], {"running"}, headers=VISION)
    waiting_p3 = await submit(
        client,
        job_body(
            name="p3",
            priority="P3",
            kind="experiment",
            resources={"gpus": 8, "gpu_models": ["H100"]},
        ),
    )
    p1 = await submit(
        client,
        job_body(
            name="p1",
            priority="P1",
            kind="inference",
            resources={"gpus": 8, "gpu_models": ["H100"]},
        ),
    )
    await asyncio.sleep(0.5)  # a few scheduler passes: nothing fits
    for j in (waiting_p3, p1):
        state = (await (await client.get(f"/v1/jobs/{j['id']}", headers=VISION)).json())["state"]
        assert state == "pending"
    freed = await (await client.get(f"/v1/jobs/{fillers[0]['id']}", headers=VISION)).json()
    await client.delete(f"/v1/jobs/{fillers[0]['id']}", headers=VISION)
    placed = await wait_for_state(client, p1["id"], {"scheduled", "running"}, headers=VISION)
    assert placed["placement"]["pool_id"] == freed["placement"]["pool_id"]
    p3_now = await (await client.get(f"/v1/jobs/{waiting_p3['id']}", headers=VISION)).json()
    assert p3_now["state"] == "pending"
    for j in [*fillers, waiting_p3, p1]:
        await client.delete(f"/v1/jobs/{j['id']}", headers=VISION)


async def test_tokens_never_reach_the_logs(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    job = await submit(client, job_body(estimated_duration_s=60))
    await wait_for_state(client, job["id"], {"succeeded"}, headers=VISION)
    await client.get("/v1/jobs", headers={"Authorization": "Bearer not-a-real-token-123"})
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for token in (*TOKENS, "not-a-real-token-123"):
        assert token not in text


# ---- explain: run time, energy and the reference model --------------------------------


async def explain(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/placements:explain", json=body, headers=VISION)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


@pytest.fixture
async def perf_client(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Client]:
    """The demo fleet with run times by GPU model (`scheduler.gpu_performance`) on."""
    settings = fast_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}",
        **{"scheduler.gpu_performance": True},
    )
    cli: Client = await aiohttp_client(create_app(settings))
    yield cli
    await cli.close()


async def test_explain_gives_each_candidate_its_run_time_and_energy(client: Client) -> None:
    body = job_body(estimated_duration_s=7200, resources={"gpus": 1, "gpu_models": []})
    ev = await explain(client, body)
    assert {c["gpu_model"] for c in ev["candidates"]} >= {"H100", "L4"}
    for cand in ev["candidates"]:
        # the performance model is off by default: every model runs for the estimate
        assert cand["duration_s"] == 7200
        assert cand["energy_kwh"] > 0
        assert cand["cost_usd"] == pytest.approx(cand["hourly_cost_usd"] * 2, rel=1e-3)
    assert not any(r["reason"] == "gpu_performance" for r in ev["rejected"])


async def test_explain_scales_run_time_by_gpu_model_when_on(perf_client: Client) -> None:
    body = job_body(
        kind="inference",
        priority="P2",
        estimated_duration_s=3600,
        reference_gpu_model="A100-80GB",
        resources={"gpus": 1, "gpu_models": []},
    )
    ev = await explain(perf_client, body)
    by_model = {c["gpu_model"]: c for c in ev["candidates"]}
    table = shipped_table()
    for model in ("H100", "L4", "A100-80GB"):
        rel = table.relative(model, WorkloadClass.INFERENCE)
        assert by_model[model]["duration_s"] == pytest.approx(3600 / rel, abs=0.5), model
    # a slower model runs longer and, per GPU-hour, costs and uses energy for longer
    h100, l4 = by_model["H100"], by_model["L4"]
    assert l4["duration_s"] > h100["duration_s"]
    assert l4["cost_usd"] == pytest.approx(
        l4["hourly_cost_usd"] * l4["duration_s"] / 3600, rel=1e-3
    )

    # training: the shipped table has no training figure but the reference's own, so only
    # the reference model runs it; every other pool is refused for the missing figure
    ev = await explain(perf_client, {**body, "kind": "training"})
    assert {c["gpu_model"] for c in ev["candidates"]} == {"A100-80GB"}
    refused = [r for r in ev["rejected"] if r["reason"] == "gpu_performance"]
    assert refused and all("scheduler.gpu_throughput" in r["detail"] for r in refused)


async def test_an_unknown_reference_model_is_a_422(client: Client) -> None:
    body = job_body(reference_gpu_model="TPU-v9")
    for path in ("/v1/placements:explain", "/v1/jobs"):
        resp = await client.post(path, json=body, headers=VISION)
        assert resp.status == 422, path
        problem = await resp.json()
        assert [e["field"] for e in problem["errors"]] == ["reference_gpu_model"]
        assert problem["errors"][0]["type"] == "unknown_gpu_model"


async def test_node_pool_is_validated_kept_and_explained(client: Client) -> None:
    """A node pool name is a DNS label; a job asking one no pool is in is refused by every
    pool, each naming the node pool rule."""
    resp = await client.post("/v1/jobs", json=job_body(node_pool="Train_Pool"), headers=VISION)
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == ["node_pool"]

    body = job_body(node_pool="train")
    ev = await explain(client, body)
    assert ev["candidates"] == []
    asked = [r for r in ev["rejected"] if r["reason"] == "node_pool"]
    assert asked and all(r["detail"].startswith("job asks node pool train") for r in asked)
    resp = await client.post("/v1/jobs", json=body, headers=VISION)
    assert resp.status == 422, "no pool could ever take it"
    types = {e["type"] for e in (await resp.json())["errors"]}
    assert "unschedulable.node_pool" in types
