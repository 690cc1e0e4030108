"""The schema is exactly what Alembic's migrations build, on both backends."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from broker.db.engine import create_engine, current_revision, head_revision, upgrade
from broker.db.models import Base


async def test_migrations_match_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()

        def diff(conn: Connection) -> list[Any]:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))

        async with engine.connect() as conn:
            changes = await conn.run_sync(diff)
        assert changes == [], f"models changed without a migration: {changes}"
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent_and_builds_every_table(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)

        def tables(conn: Connection) -> set[str]:
            return set(inspect(conn).get_table_names())

        async with engine.connect() as conn:
            names = await conn.run_sync(tables)
        assert names >= {
            "jobs",
            "job_events",
            "placements",
            "gpu_pools",
            "sites",
            "alembic_version",
        }
    finally:
        await engine.dispose()
