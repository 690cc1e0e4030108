"""A restart of the broker loses no accepted job, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from broker.config import Settings
from broker.service import create_app
from tests.conftest import ADMIN, VISION, job_body, wait_for_state


async def test_restart_keeps_and_finishes_every_job(
    aiohttp_client: Any, settings: Settings
) -> None:
    first = await aiohttp_client(create_app(settings))
    ids = []
    for i, duration in enumerate([3600 * 2, 3600 * 2, 3600 * 2]):
        resp = await first.post(
            "/v1/jobs", json=job_body(name=f"j{i}", estimated_duration_s=duration), headers=VISION
        )
        assert resp.status == 201
        ids.append((await resp.json())["id"])
    # a two-node gang job, placed before or after the restart
    gang = await first.post(
        "/v1/jobs",
        headers=VISION,
        json=job_body(
            name="later",
            resources={"gpus": 8, "gpu_models": ["H100"], "nodes": 2},
            estimated_duration_s=60,
        ),
    )
    gang_id = (await gang.json())["id"]
    await wait_for_state(first, ids[0], {"running"}, headers=VISION)
    await first.close()  # the broker stops with jobs pending and running

    second = await aiohttp_client(create_app(settings))
    for job_id in ids:
        done = await wait_for_state(second, job_id, {"succeeded"}, headers=VISION)
        assert [e["to_state"] for e in done["events"]][-1] == "succeeded"
    listed = await (await second.get("/v1/jobs?limit=500", headers=ADMIN)).json()
    assert {j["id"] for j in listed["items"]} == {*ids, gang_id}
    done = await wait_for_state(second, gang_id, {"succeeded"}, headers=VISION)
    assert done["placement"]["gpus"] == 16
    inv = await (await second.get("/v1/inventory", headers=ADMIN)).json()
    assert all(row["allocated_gpus"] == 0 for row in inv["items"])
    await second.close()
