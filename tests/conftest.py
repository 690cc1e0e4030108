"""Shared fixtures: the two database backends, settings for a fast demo fleet, API clients.

PostgreSQL is the production database, so every persistence and API test runs on it as
well as on SQLite. The tests reach the local server (default
postgresql://postgres@127.0.0.1:5432/postgres, override with BROKER_TEST_POSTGRES_URL),
starting it with pg_ctlcluster when it is installed but stopped. Each test gets a fresh
database cloned from a template migrated once per session. Set BROKER_TEST_SKIP_POSTGRES=1
to run SQLite only on a machine without PostgreSQL (CI never sets it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.config import Settings, load_settings
from broker.db.connection import create_engine, upgrade
from broker.service import create_app

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "demo.yaml"
SHARED_DATA = REPO.parent / "shared" / "data"

ADMIN = {"Authorization": "Bearer demo-admin-token"}
VISION = {"Authorization": "Bearer demo-vision-token"}
NLP = {"Authorization": "Bearer demo-nlp-token"}
TOKENS = ("demo-admin-token", "demo-vision-token", "demo-nlp-token")

T = TypeVar("T")

PG_URL = os.environ.get("BROKER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _run_sync(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a thread (safe inside any loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro_fn())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def _pg_admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _run_sync(run)


def _pg_reachable() -> bool:
    try:
        _pg_admin("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def _start_local_postgres() -> None:
    """Start the machine's PostgreSQL cluster if it is installed but not running."""
    ctl = shutil.which("pg_ctlcluster")
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if ctl else []
    if ctl and versions:
        subprocess.run(
            [ctl, "--skip-systemctl-redirect", versions[-1], "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database on the local PostgreSQL server."""
    if os.environ.get("BROKER_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("BROKER_TEST_SKIP_POSTGRES=1")
    if not _pg_reachable():
        _start_local_postgres()
    if not _pg_reachable():
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_URL} and could not be started; "
            "set BROKER_TEST_POSTGRES_URL, or BROKER_TEST_SKIP_POSTGRES=1 to skip"
        )
    name = f"broker_tpl_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')

    async def migrate() -> None:
        engine = create_engine(_with_database(PG_URL, name))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    _run_sync(migrate)
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"broker_t_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _with_database(PG_URL, name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'broker.db'}"
    return str(request.getfixturevalue("pg_url"))


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """The demo fleet with a fast simulator and scheduler, on the given database."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "sim.speed": 3600.0,  # an hour-long job runs one second
        "sim.start_delay_s": 0.02,
        "scheduler.interval_s": 0.2,
    }
    values.update(overrides)
    return load_settings(DEMO_CONFIG, env={}, overrides=values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return fast_settings(database_url)


def _leaked_tasks() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not me
        and not t.done()
        and t.get_name().startswith(("sim:", "follow:", "scheduling-loop", "scheduled-leader"))
    ]


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    app: web.Application = create_app(settings)
    cli: TestClient[Any, Any] = await aiohttp_client(app)
    yield cli
    await cli.close()
    assert not _leaked_tasks(), f"tasks left running: {_leaked_tasks()}"


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid submission; keyword arguments replace top-level fields."""
    body: dict[str, Any] = {
        "name": "resnet50-train",
        "priority": "P2",
        "kind": "training",
        "resources": {"gpus": 2, "gpu_models": ["A100-80GB", "H100"]},
        "workload": {
            "image": "nvcr.io/nvidia/pytorch:24.05-py3",
            "command": ["python", "train.py"],
            "env": {"EPOCHS": "3"},
        },
        "estimated_duration_s": 1800,
    }
    body.update(overrides)
    return body


async def wait_for_state(
    client: TestClient[Any, Any],
    job_id: str,
    states: set[str],
    *,
    headers: dict[str, str] = ADMIN,
    within_s: float = 15.0,
) -> dict[str, Any]:
    """Poll the API until the job is in one of `states`; fail with its history otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        resp = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        if body["state"] in states:
            return body
        if loop.time() > deadline:
            pytest.fail(f"job {job_id} stuck in {body['state']}: {body['events']}")
        await asyncio.sleep(0.05)
