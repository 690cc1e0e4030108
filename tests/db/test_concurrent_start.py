"""Replicas starting at the same instant on a fresh database: both come up (issue 13, item 5).

Each trial starts two processes at once, each doing what `broker serve` does first (migrate,
seed the configured sites, record the first inventory), on an empty PostgreSQL database or
a SQLite file that does not exist yet. Before the migration lock and the race-safe inserts,
one of the two failed on PostgreSQL in about two trials of three (a UniqueViolation on
`alembic_version` or `pk_sites`).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from broker.db.connection import create_engine, head_revision
from tests.conftest import PG_URL, _pg_admin, _with_database

TRIALS = 3

# What a replica does at start-up before it serves, against the database in argv[1].
_REPLICA = """
import asyncio, sys
from dataclasses import replace
from pathlib import Path
from broker.config import load_settings
from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.clock import SystemClock
from broker.domain.enums import Health
from connectors.settings import pools_from_settings, site_from_settings

async def main() -> None:
    settings = load_settings(Path(sys.argv[2]), env={}, overrides={"database_url": sys.argv[1]})
    engine = create_engine(settings.database_url)
    try:
        await upgrade(engine)
        store = Store(sessions=session_factory(engine), clock=SystemClock())
        for s in settings.sites:
            site = site_from_settings(s)
            await store.ensure_site(replace(site, health=Health.UNREACHABLE))
            await store.sync_site(site, pools_from_settings(s))
    finally:
        await engine.dispose()

asyncio.run(main())
"""

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def _start_two(url: str) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, url, str(DEMO)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


async def _state(url: str) -> tuple[str | None, int, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            sites = (await conn.execute(text("SELECT count(*) FROM sites"))).scalar_one()
            nodes = (await conn.execute(text("SELECT count(*) FROM ledger_nodes"))).scalar_one()
        return version, sites, nodes
    finally:
        await engine.dispose()


@pytest.fixture
def empty_pg_urls(pg_template: str) -> Iterator[list[str]]:
    """Empty PostgreSQL databases (no schema at all), one per trial."""
    names = [f"broker_empty_{uuid.uuid4().hex[:10]}" for _ in range(TRIALS)]
    for name in names:
        _pg_admin(f'CREATE DATABASE "{name}"')
    yield [_with_database(PG_URL, n) for n in names]
    for name in names:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _check(url: str) -> None:
    results = _start_two(url)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    version, sites, nodes = await _state(url)
    assert version == head_revision()
    assert sites > 0 and nodes > 0


async def test_two_replicas_start_together_on_an_empty_postgresql(
    empty_pg_urls: list[str],
) -> None:
    for url in empty_pg_urls:
        await _check(url)


async def test_two_replicas_start_together_on_a_new_sqlite_file(tmp_path: Path) -> None:
    for trial in range(TRIALS):
        await _check(f"sqlite+aiosqlite:///{tmp_path / f'broker-{trial}.db'}")
