"""Engine creation and schema migration.

`upgrade` runs Alembic on a connection of the application's own async engine (Alembic's
documented "run_sync" recipe), so `broker serve` can migrate inside its event loop and the
migration sees exactly the database the service will use.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///broker.db"  # the embedded default
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def create_engine(url: str, *, foreign_keys: bool = True) -> AsyncEngine:
    """The async engine for `url`; `foreign_keys=False` only for SQLite table rebuilds."""
    url = normalise_database_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and queueing in the pool is fairer
        # and far cheaper than connections sleeping in SQLite's busy handler.
        kwargs = {"connect_args": {"timeout": 30}, "pool_size": 1, "max_overflow": 0}
    else:
        kwargs.update(pool_size=10, max_overflow=10)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(
            engine.sync_engine,
            "connect",
            _sqlite_foreign_keys_on if foreign_keys else _sqlite_pragmas,
        )
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let the driver not issue BEGIN itself; we issue BEGIN IMMEDIATE on "begin" below so
    # a writer takes the lock up front instead of failing on upgrade from a read lock.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_foreign_keys_on(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to `revision`; a no-op when it is there already.

    On SQLite, Alembic changes a table by rebuilding it (copy, drop, rename), which foreign
    keys would forbid; SQLite's own procedure for this is to switch them off for the
    migration and check them afterwards, so the migration runs on a second engine without
    them and fails if `PRAGMA foreign_key_check` finds any violation.
    """

    def run(sync_conn: Connection) -> None:
        if sync_conn.dialect.name == "postgresql":
            # replicas starting together migrate one after the other: the lock is held to
            # the end of this transaction, and the next one finds the schema at head
            sync_conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)
        if sync_conn.dialect.name == "sqlite":
            broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left foreign keys broken: {broken[:5]}")

    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            await conn.run_sync(run)
        return
    migrator = create_engine(engine.url.render_as_string(hide_password=False), foreign_keys=False)
    try:
        async with _file_lock(engine.url.database), migrator.begin() as conn:
            await conn.run_sync(run)
    finally:
        await migrator.dispose()


# pg_advisory_xact_lock key for migrations: "gpubrkr" in ASCII, any fixed bigint would do
MIGRATION_LOCK = int.from_bytes(b"gpubrkr", "big")


@contextlib.asynccontextmanager
async def _file_lock(database: str | None) -> AsyncIterator[None]:
    """An exclusive lock on `<database>.migrate.lock` beside a SQLite file (none for an
    in-memory database): processes migrating one file take turns. Waited for by polling,
    so the event loop keeps running (and no thread is left behind)."""
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).with_name(Path(database).name + ".migrate.lock")
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def normalise_database_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url
