"""A named lease in the database: at most one holder at a time, for a bounded time.

Taking and renewing is one statement, an upsert whose update only applies when the row is
free, expired or already ours:

    INSERT INTO leases ... ON CONFLICT (name) DO UPDATE SET ...
    WHERE leases.expires_at < :now OR leases.holder = :holder
    RETURNING holder, ...

It returns a row exactly when the caller holds the lease afterwards. On PostgreSQL a
concurrent attempt waits for the row lock and re-checks the WHERE against the winner's
committed row, so of any number of simultaneous callers exactly one wins; SQLite
serialises writers anyway. SQLite (3.35+) and PostgreSQL both support this syntax.

A lease is only a promise in time, so the holder must act as if it lost the lease some
margin before `expires_at` unless it renewed (see `broker.duties.leader`; the sites' follow
loops use leases too, `broker.scheduling.follow`). Expiry is judged by the callers' clocks,
which therefore must agree to within that margin (NTP does far better).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Table, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.models import LeaseRow
from broker.domain.clock import Clock

_leases = cast(Table, LeaseRow.__table__)


@dataclass(frozen=True, slots=True)
class LeaseState:
    name: str
    holder: str
    acquired_at: datetime  # when this holder took it (kept across renewals)
    renewed_at: datetime
    expires_at: datetime


def default_holder() -> str:
    """Unique per process and instance, readable in the ops endpoint: host:pid:random."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """Take, renew, release and read named leases; time comes from `clock`."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def acquire_or_renew(self, *, name: str, holder: str, ttl_s: float) -> LeaseState | None:
        """Hold `name` for `ttl_s` more seconds from now; None when someone else holds it."""
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        now = self._clock.now()
        expires = now + timedelta(seconds=ttl_s)
        async with self._sessions.begin() as session:
            stmt = _insert(session)(_leases).values(
                name=name, holder=holder, expires_at=expires, acquired_at=now, renewed_at=now
            )
            upsert = stmt.on_conflict_do_update(
                index_elements=[_leases.c.name],
                set_={
                    "holder": stmt.excluded.holder,
                    "expires_at": stmt.excluded.expires_at,
                    "renewed_at": stmt.excluded.renewed_at,
                    # a renewal keeps the time the holder first took the lease
                    "acquired_at": case(
                        (_leases.c.holder == stmt.excluded.holder, _leases.c.acquired_at),
                        else_=stmt.excluded.acquired_at,
                    ),
                },
                where=(_leases.c.expires_at < now) | (_leases.c.holder == holder),
            ).returning(*_leases.c)
            row = (await session.execute(upsert)).one_or_none()
        return None if row is None else _state(row)

    async def release(self, *, name: str, holder: str) -> bool:
        """Give the lease up now if `holder` has it, so a successor need not wait the ttl."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(_leases).where(_leases.c.name == name, _leases.c.holder == holder)
            )
        return cast(CursorResult[Any], result).rowcount > 0

    async def read(self, name: str) -> LeaseState | None:
        """The row as it is now (possibly expired); None when nobody ever took it."""
        async with self._sessions() as session:
            row = (await session.execute(select(*_leases.c).where(_leases.c.name == name))).first()
        return None if row is None else _state(row)


def _insert(session: AsyncSession) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    """The dialect's INSERT, the one with `on_conflict_do_update`."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"leases need PostgreSQL or SQLite, not {dialect}")


def _state(row: Any) -> LeaseState:
    return LeaseState(
        name=row.name,
        holder=row.holder,
        acquired_at=row.acquired_at,
        renewed_at=row.renewed_at,
        expires_at=row.expires_at,
    )
