"""Work that one replica at a time does, held by a lease in the database.

A `Leased` takes or renews its lease (`broker.db.leases`) every `renew_s`. On taking it,
it runs `take` (catching up on what the last holder left), then keeps `body` running as a
task for as long as it holds the lease, and calls `every` each `every_s` meanwhile. On
finding the lease held by another replica it cancels `body` at once. A holder that cannot
reach the database cancels `body` `renew_s` before its lease would lapse, so a successor
(which waits for the full lease) starts after it stopped. A replica that dies stops
renewing, so a survivor takes over within `lease_s + renew_s`. On a clean stop the lease
is given back and a successor takes over within `renew_s`.

Used for each site's follow loop (`broker.scheduling.follow`) and the scheduling passes
(`broker.scheduling.passes`); the scheduled duties have their own leader
(`broker.duties.leader`), which also drives an APScheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from broker.db.leases import Leases
from broker.domain.clock import Clock

log = logging.getLogger(__name__)

_EXPECTED = (SQLAlchemyError, OSError, TimeoutError)  # the database is away or slow
_MAX_NAME = 64  # leases.name


def lease_name(prefix: str, key: str = "") -> str:
    """`prefix:key`, shortened with a digest to fit the lease table's 64 characters."""
    name = f"{prefix}:{key}" if key else prefix
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[:40]}:{hashlib.sha256(name.encode()).hexdigest()[:16]}"


class Leased:
    """Runs `body` while this replica holds the lease `name`."""

    def __init__(
        self,
        *,
        name: str,
        what: str,
        leases: Leases,
        holder: str,
        clock: Clock,
        lease_s: float,
        renew_s: float,
        body: Callable[[], Coroutine[Any, Any, None]],
        take: Callable[[], Awaitable[None]] | None = None,
        every: Callable[[], Awaitable[None]] | None = None,
        every_s: float = 0.0,
    ) -> None:
        self._name = name
        self._what = what  # for the log: "site oslo", "the scheduling passes"
        self._leases = leases
        self._holder = holder
        self._clock = clock
        self._lease_s = lease_s
        self._renew_s = renew_s
        self._body = body
        self._take = take
        self._every = every
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._held_until: datetime | None = None
        self._next_every: datetime | None = None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        """Take, renew and act on the lease until cancelled; then stop and give it back."""
        try:
            while True:
                await self.step()
                await asyncio.sleep(self._renew_s)
        finally:
            await self._stop()
            with contextlib.suppress(*_EXPECTED):
                async with asyncio.timeout(self._renew_s):
                    await self._leases.release(name=self._name, holder=self._holder)

    async def step(self) -> None:
        """One round: renew or take the lease, then start, keep or stop `body`."""
        try:
            async with asyncio.timeout(self._renew_s):
                state = await self._leases.acquire_or_renew(
                    name=self._name, holder=self._holder, ttl_s=self._lease_s
                )
        except _EXPECTED as exc:
            why = str(exc) or f"no answer within {self._renew_s:g} s ({type(exc).__name__})"
            log.warning("cannot renew the lease for %s: %s", self._what, why)
            margin = timedelta(seconds=self._renew_s)
            if self._held_until is not None and self._clock.now() >= self._held_until - margin:
                await self._stop()  # a successor may take over soon
            return
        if state is None:  # another replica holds it
            self._held_until = None
            await self._stop()
            return
        self._held_until = state.expires_at
        now = self._clock.now()
        if not self.active:
            log.info("%s: this replica takes over", self._what)
            await self._guarded(self._take)
            self._task = asyncio.create_task(self._body(), name=self._name)
        elif self._next_every is None or now < self._next_every:
            return
        else:
            await self._guarded(self._every)
        self._next_every = now + timedelta(seconds=self._every_s)

    async def _guarded(self, call: Callable[[], Awaitable[None]] | None) -> None:
        if call is None:
            return
        try:
            await call()
        except asyncio.CancelledError:
            raise
        except Exception:  # the next round tries again; the body runs meanwhile
            log.exception("%s: catching up failed", self._what)

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        log.info("%s: this replica stops (the lease went elsewhere or lapsed)", self._what)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
