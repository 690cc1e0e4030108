"""Inserts that two replicas may race on: a row another replica inserted first is kept.

Start-up seeds the configured sites and every inventory refresh adds the pools and ledger
rows it has not seen; two replicas starting together (or refreshing the same site) would
otherwise both see "no row" and both insert it, and one would fail on the primary key.
`INSERT ... ON CONFLICT DO NOTHING`, which PostgreSQL and SQLite both have, makes the
second insert a no-op; the caller then updates the row as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_missing(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert `rows`, skipping any whose primary key is there already."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(table).on_conflict_do_nothing(), list(rows))
