"""The schema is exactly what Alembic's migrations build, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from broker.db.connection import create_engine, current_revision, head_revision, upgrade
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


async def test_upgrade_from_0001_moves_allocations_onto_nodes(database_url: str) -> None:
    """A database with running work at revision 0001 keeps its allocation per node."""
    from sqlalchemy import MetaData, text

    engine = create_engine(database_url)
    try:
        # The test databases are already at head; start this one over at 0001.
        def reset(conn: Connection) -> None:
            existing = MetaData()
            existing.reflect(conn)  # every table, whatever later revisions added
            existing.drop_all(conn)

        async with engine.begin() as conn:
            await conn.run_sync(reset)
        await upgrade(engine, "0001")
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sites VALUES ('s', 'sim', 'r', 'l', 'Z', true, 1.2, "
                    "'healthy', '', :t)"
                ),
                {"t": t0},
            )
            # pool: 2 nodes x 8 GPUs, 12 of 16 allocated at pool level
            await conn.execute(
                text(
                    "INSERT INTO gpu_pools VALUES ('s/H100', 's', 'H100', 80, 8, 2, '[]', "
                    "2.0, NULL, 96, 1024, 16000, 12000, :t)"
                ),
                {"t": t0},
            )
            for job, milli in (("j1", 8000), ("j2", 4000)):
                await conn.execute(
                    text(
                        "INSERT INTO jobs (id, tenant, name, tier, kind, state, state_reason, "
                        "spec, gpu_milli, estimated_duration_s, preemptible, version, "
                        "created_at, updated_at) VALUES (:j, 't', 'n', 'P2', 'training', "
                        "'running', '', '{}', :m, 60, false, 1, :t, :t)"
                    ),
                    {"j": job, "m": milli, "t": t0},
                )
                await conn.execute(
                    text(
                        "INSERT INTO placements (job_id, site, pool_id, gpu_milli, "
                        "price_per_gpu_hour, spot, estimated_cost_usd, active, created_at) "
                        "VALUES (:j, 's', 's/H100', :m, 2.0, false, 1.0, true, :t)"
                    ),
                    {"j": job, "m": milli, "t": t0},
                )
        await upgrade(engine)
        async with engine.connect() as conn:
            nodes = (
                await conn.execute(text("SELECT idx, allocated_milli FROM pool_nodes ORDER BY idx"))
            ).all()
            held = (
                await conn.execute(
                    text("SELECT job_id, node_indices FROM placements ORDER BY job_id")
                )
            ).all()
        assert [tuple(n) for n in nodes] == [(0, 8000), (1, 4000)]
        assert [(j, n if isinstance(n, list) else json.loads(n)) for j, n in held] == [
            ("j1", [0]),
            ("j2", [1]),
        ]
    finally:
        await engine.dispose()
