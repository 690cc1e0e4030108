"""One kind of object followed by list+watch: list, then watch from the list's resourceVersion.

The watch is a long-lived blocking iterator of the sync client, so it runs on its own
one-thread `Blocking` pool (on the shared SDK pool it would pin a thread for good) and hands
each event to the loop with `call_soon_threadsafe`. One task drives it: list, watch from the
list's version, re-watch from the last version an event or BOOKMARK carried when the server
ends the watch (`timeout_seconds`, so the thread also re-checks its stop flag), re-list on
410 Gone, reconnect with backoff when the connection drops. The follower runs one of these
for the broker's Jobs and one for its replicas' Deployments. The protocol:
https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.errors import AuthFailed, ConnectorError
from connectors.kubernetes.client import WatchHandle
from connectors.kubernetes.errors import Expired
from connectors.retry import Backoff
from connectors.threads import Blocking

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
_STOP_GRACE_S = 2.0
_QUICK_WATCH_S = 1.0


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # ADDED / MODIFIED / DELETED, or SNAPSHOT for a (re-)list
    obj: JsonDict | None = None
    items: tuple[JsonDict, ...] = ()


class Watch(Protocol):
    """A client's blocking watch call (`KubeClient.watch_jobs`, `watch_deployments`)."""

    def __call__(
        self,
        handle: WatchHandle,
        *,
        label_selector: str,
        timeout_s: int,
        deliver: Callable[[str, JsonDict], None],
    ) -> None: ...


class ListWatch:
    """Lists and watches one kind of object, handing each snapshot and event to `deliver`."""

    def __init__(
        self,
        *,
        what: str,
        site: str,
        lister: Callable[[], Awaitable[tuple[list[JsonDict], str]]],
        watch: Watch,
        selector: str,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        watch_timeout_s: int,
        deliver: Callable[[Event], None],
    ) -> None:
        self._what = what  # "Jobs", "Deployments": for the log
        self._site = site
        self._lister = lister
        self._watch_call = watch
        self._selector = selector
        self._backoff = backoff
        self._sleep = sleep
        self._watch_timeout_s = watch_timeout_s
        self._deliver = deliver
        self._handle: WatchHandle | None = None
        self._watch_future: asyncio.Future[None] | None = None
        self._pool: Blocking | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rng = random.Random()

    def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._pool = Blocking(1)
        self._task = asyncio.create_task(
            self._run(), name=f"follow:{self._site}:watch:{self._what.lower()}"
        )

    async def stop(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_GRACE_S
        # The watch may be between connecting and reading; stop again until it has ended.
        while self._watch_future is not None and not self._watch_future.done():
            if self._handle is not None:
                self._handle.stop()
            if loop.time() > deadline:
                log.warning("%s: the %s watch thread did not stop in time", self._site, self._what)
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        version: str | None = None
        while not self._stopping:
            try:
                if version is None:
                    items, version = await self._lister()
                    self._deliver(Event("SNAPSHOT", items=tuple(items)))
                began, since = loop.time(), version
                version = await self._watch(version)
                if version == since and loop.time() - began < _QUICK_WATCH_S:
                    # Ended at once with nothing new (a proxy cutting it short): don't spin.
                    await self._sleep(self._backoff.delay(min(failures, 30), self._rng))
                    failures += 1
                else:
                    failures = 0
            except Expired:
                log.info("%s: watch expired; listing %s again", self._site, self._what)
                version = None
            except ConnectorError as exc:
                if self._stopping:
                    return
                if version is not None and self._handle is not None:
                    version = self._handle.resource_version  # resume after the last event
                level = logging.ERROR if isinstance(exc, AuthFailed) else logging.WARNING
                log.log(level, "following %s: %s; reconnecting", self._what, exc)  # names the site
                await self._sleep(self._backoff.delay(min(failures, 30), self._rng))
                failures += 1

    async def _watch(self, version: str) -> str:
        """One watch request from `version`; returns the version to resume from."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        handle = self._handle = WatchHandle(version)
        deliver = self._deliver

        def on_event(kind: str, obj: JsonDict) -> None:  # on the watch thread
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(deliver, Event(kind, obj=obj))

        self._watch_future = asyncio.ensure_future(
            self._pool.run(
                self._watch_call,
                handle,
                label_selector=self._selector,
                timeout_s=self._watch_timeout_s,
                deliver=on_event,
            )
        )
        await asyncio.shield(self._watch_future)
        return handle.resource_version
