"""Waking the scheduler through the database: PostgreSQL LISTEN/NOTIFY, polling on SQLite.

When the API runs in other processes than the scheduler (`broker serve --role api` and
`--role scheduler`), a submission or a cancel must still start a pass soon. On PostgreSQL
the API sends `NOTIFY broker_wake` and the scheduler LISTENs on one dedicated connection;
a notification is delivered to every listener when the sender's statement commits. Many
wake-ups in a burst are coalesced: while one NOTIFY is being sent, further ones only mark
that another is due. SQLite has no notifications: the scheduler's periodic pass
(`scheduler.interval_s`) is the fallback, so its latency is at most one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

CHANNEL = "broker_wake"
_RETRY_S = 2.0


class Waker:
    """Sends wake-ups to every listening scheduler (no-op on SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._sending: asyncio.Task[None] | None = None
        self._again = False
        self._capacity = False  # a coalesced wake-up says capacity changed if any did

    @property
    def enabled(self) -> bool:
        return self._enabled

    def wake(self, capacity_changed: bool = False) -> None:
        """Ask the schedulers for a pass soon (fire and forget; coalesced)."""
        if not self._enabled:
            return
        self._capacity |= capacity_changed
        if self._sending is not None and not self._sending.done():
            self._again = True
            return
        self._sending = asyncio.create_task(self._send(), name="wake-notify")

    async def _send(self) -> None:
        while True:
            self._again = False
            payload, self._capacity = ("capacity" if self._capacity else ""), False
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload}
                    )
            except (SQLAlchemyError, OSError) as exc:
                log.warning("cannot wake the scheduler through the database: %s", exc)
                return  # its periodic pass comes anyway
            if not self._again:
                return

    async def close(self) -> None:
        task, self._sending = self._sending, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def listen(engine: AsyncEngine, on_wake: Callable[[bool], None]) -> None:
    """Call `on_wake(capacity_changed)` for every notification until cancelled; reconnects
    when the connection drops. Returns at once on SQLite (the scheduler polls instead)."""
    if engine.dialect.name != "postgresql":
        return
    while True:
        try:
            async with engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                lost = asyncio.Event()

                def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                    on_wake(payload == "capacity")

                raw.add_termination_listener(functools.partial(_set, lost))
                await raw.add_listener(CHANNEL, notified)
                try:
                    await lost.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await raw.remove_listener(CHANNEL, notified)
        except asyncio.CancelledError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            log.warning("listening for scheduler wake-ups: %s; retrying", exc)
        await asyncio.sleep(_RETRY_S)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()
