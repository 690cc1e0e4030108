"""The API and the scheduler as separate processes on one database (issue 13, item 4).

`broker serve --role api` serves the HTTP API and runs no passes, follows no site and leads
no duties; `--role scheduler` does those and serves only the operational routes. A job
submitted to the API process is placed by the scheduler process: on PostgreSQL woken at
once through LISTEN/NOTIFY (the scheduler's periodic pass is set to an hour here, so only
the wake-up can explain a prompt placement), on SQLite by the periodic pass. A cancel sent
to the API process stops the run the scheduler process follows.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from tests.conftest import ADMIN, VISION, job_body
from tests.scheduling.replicas import (
    all_gpus_free,
    errors,
    follows_every_site,
    job,
    ready,
    replicas,
    states,
    submit,
    until,
)


async def _check_roles(http: aiohttp.ClientSession, api_url: str, sched_url: str) -> None:
    async with http.get(f"{sched_url}/v1/jobs", headers=ADMIN) as resp:
        assert resp.status == 404  # the scheduler serves no API
    for url in (api_url, sched_url):
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200


async def test_api_and_scheduler_processes_on_postgresql(
    pg_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with replicas(tmp_path, pg_url) as start:
        sched = start("scheduler", interval_s=3600, role="scheduler")
        await ready(http, sched)
        await follows_every_site(pg_url, sched)
        await follows_every_site(pg_url, sched, lease="scheduler")
        api = start("api", interval_s=3600, role="api")
        await ready(http, api)
        await _check_roles(http, api.url, sched.url)

        began = time.monotonic()
        quick = [
            await submit(http, api, job_body(name=f"q{i}", estimated_duration_s=300))
            for i in range(4)
        ]
        await until(http, api, quick, {"scheduled", "running", "succeeded"}, within_s=10)
        assert time.monotonic() - began < 3.0  # woken by NOTIFY, not by the hourly pass
        long = await submit(http, api, job_body(name="long", estimated_duration_s=360_000))
        await until(http, api, [long], {"running"}, within_s=10)
        async with http.delete(f"{api.url}/v1/jobs/{long}", headers=VISION) as resp:
            assert resp.status == 200, await resp.text()

        await until(http, api, [*quick, long], {"succeeded", "cancelled"}, within_s=20)
        assert (await job(http, api, long))["state"] == "cancelled"
        await all_gpus_free(http, api)
        await follows_every_site(pg_url, sched)  # the API process never took a site
        for job_id in quick:
            assert states(await job(http, api, job_id))[-1] == "succeeded"
        assert errors(api) == [] and errors(sched) == []


async def test_api_and_scheduler_processes_on_sqlite(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    with replicas(tmp_path, db) as start:
        sched = start("scheduler", interval_s=0.5, role="scheduler")
        await ready(http, sched)
        api = start("api", interval_s=0.5, role="api")
        await ready(http, api)
        await _check_roles(http, api.url, sched.url)
        jobs = [
            await submit(http, api, job_body(name=f"q{i}", estimated_duration_s=300))
            for i in range(4)
        ]
        await until(http, api, jobs, {"succeeded"}, within_s=20)
        await all_gpus_free(http, api)
        assert errors(api) == [] and errors(sched) == []
