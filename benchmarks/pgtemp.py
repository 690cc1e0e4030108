"""Throwaway PostgreSQL databases on the local server, for the benchmarks.

The server is the machine's own (127.0.0.1:5432, user postgres, trust auth); each run gets
a database with a random name that is dropped afterwards, even after a failed run.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

HOST = "127.0.0.1"
PG_DSN = {"host": HOST, "port": 5432, "user": "postgres", "database": "postgres"}


async def pg_admin() -> asyncpg.Connection:
    return await asyncpg.connect(**PG_DSN, timeout=5)


async def postgres_unreachable() -> str | None:
    """Why the server cannot be reached, or None when it can."""
    try:
        conn = await pg_admin()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@contextlib.asynccontextmanager
async def pg_database(prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A throwaway database, dropped afterwards; yields (its name, its SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name, f"postgresql+asyncpg://{PG_DSN['user']}@{HOST}:{PG_DSN['port']}/{name}"
        finally:
            try:  # FORCE (PostgreSQL 13+) ends sessions a failed or killed run may have left
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except asyncpg.PostgresSyntaxError:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()
