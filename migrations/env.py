"""Alembic environment for the broker.

The broker passes its own connection in `config.attributes["connection"]` (see
`broker.db.connection.upgrade`). Run from the `alembic` command line instead, this file builds
an async engine from `BROKER_DATABASE_URL` (or `sqlalchemy.url`).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from broker.db.connection import DEFAULT_DATABASE_URL, normalise_database_url
from broker.db.models import Base

target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from broker.db.connection import create_engine

    url = (
        os.environ.get("BROKER_DATABASE_URL")
        or context.config.get_main_option("sqlalchemy.url")
        or DEFAULT_DATABASE_URL
    )
    engine = create_engine(normalise_database_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(_configure_and_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = context.config.attributes.get("connection")
if connection is not None:
    _configure_and_run(connection)
else:
    asyncio.run(_run_async())
