"""Following the broker's Jobs: list, then watch from the list's resourceVersion.

The watch is a long-lived blocking iterator of the sync client, so it runs on its own
one-thread `Blocking` pool (on the shared SDK pool it would pin a thread for good) and hands
each event to the loop with `call_soon_threadsafe`. One task drives it: list, watch from the
list's version, re-watch from the last version an event or BOOKMARK carried when the server
ends the watch (`timeout_seconds`, so the thread also re-checks its stop flag), re-list on
410 Gone, reconnect with backoff when the connection drops. A second task turns Job objects
into `StatusUpdate`s, emitting each job's transition once however often a re-list or a
reconnect shows the same state again. The protocol:
https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes

The follower also knows each job's decided nodes (from its placement), for the connector's
drift check (see `drift`); a job whose pinned pod can never be bound is sent back with
`requeue`: its Job is deleted first (a later dispatch of the same job id must not adopt
the stuck Job) and the job is reported PREEMPTED, the state a job that lost its place
passes through on its way back to the queue, with the reason `node_gone: <node>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.clock import Clock
from broker.domain.enums import JobState
from connectors.base import StatusUpdate
from connectors.errors import AuthFailed, ConnectorError, NotFound
from connectors.kubernetes.client import KubeClient, WatchHandle
from connectors.kubernetes.drift import Expected
from connectors.kubernetes.errors import Expired
from connectors.kubernetes.labels import selector
from connectors.kubernetes.manifest import job_id_of, run_of
from connectors.kubernetes.status import JobChange, failure_detail, job_change
from connectors.retry import Backoff
from connectors.threads import Blocking

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
VANISHED = "vanished"
_STOP_GRACE_S = 2.0
_QUICK_WATCH_S = 1.0


@dataclass(slots=True)
class _Tracked:
    """One broker job as the follower knows it."""

    name: str
    uid: str | None  # the Job incarnation followed; events of others are ignored
    state: JobState | None = None  # last state emitted
    seen: bool = False  # observed in a list or a watch event
    cancelled: bool = False  # the broker deleted it: report nothing more
    nodes: tuple[str, ...] = ()  # the nodes its placement decided (empty: not pinned)
    run: str | None = None  # the broker run the Job was made for (its annotation)


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # ADDED / MODIFIED / DELETED, or SNAPSHOT for a (re-)list
    obj: JsonDict | None = None
    items: tuple[JsonDict, ...] = ()


class JobFollower:
    """Turns the namespace's broker-owned Jobs into a stream of StatusUpdates."""

    def __init__(
        self,
        *,
        client: KubeClient,
        owner_labels: dict[str, str],
        clock: Clock,
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]],
        watch_timeout_s: int,
        emit: Callable[[StatusUpdate], None],
    ) -> None:
        self._client = client
        self._selector = selector(owner_labels)
        self._clock = clock
        self._backoff = backoff
        self._sleep = sleep
        self._watch_timeout_s = watch_timeout_s
        self._emit = emit
        self._jobs: dict[str, _Tracked] = {}
        self._events: asyncio.Queue[_Event] = asyncio.Queue()
        self._handle: WatchHandle | None = None
        self._watch_future: asyncio.Future[None] | None = None
        self._pool: Blocking | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._rng = random.Random()

    # -- what the connector tells the follower ---------------------------------------------

    def track(
        self,
        *,
        job_id: str,
        name: str,
        uid: str | None,
        nodes: tuple[str, ...] = (),
        run: str | None = None,
    ) -> None:
        """Follow a Job the broker just created or adopted (a new incarnation), whose pods
        belong on `nodes`."""
        current = self._jobs.get(job_id)
        if current is None or current.uid != uid or current.cancelled:
            self._jobs[job_id] = _Tracked(name=name, uid=uid, nodes=nodes, run=run)
        else:
            current.nodes = nodes
            current.run = run or current.run

    def expected(self) -> dict[str, Expected]:
        """Where the pods of each live, pinned job belong (for the drift check)."""
        return {
            job_id: Expected(uid=t.uid, nodes=t.nodes)
            for job_id, t in self._jobs.items()
            if t.nodes and not t.cancelled and not (t.state is not None and t.state.terminal)
        }

    async def requeue(self, job_id: str, *, reason: str, detail: str) -> bool:
        """Delete the job's Job and report the job PREEMPTED, once; False when it is not
        followed any more or the delete failed (the next check tries again)."""
        tracked = self._jobs.get(job_id)
        if tracked is None or tracked.cancelled:
            return False
        if tracked.state is not None and tracked.state.terminal:
            return False
        tracked.cancelled = True  # set before the await: its DELETED event is not a vanishing
        try:
            await self._client.delete_job(tracked.name)
        except NotFound:
            pass
        except ConnectorError as exc:
            tracked.cancelled = False
            log.warning("cannot delete Job %s to requeue job %s: %s", tracked.name, job_id, exc)
            return False
        self._send(job_id, JobState.PREEMPTED, reason, detail, run=tracked.run)
        return True

    def cancelled(self, job_id: str) -> None:
        tracked = self._jobs.get(job_id)
        if tracked is not None:
            tracked.cancelled = True

    async def observe(self, obj: JsonDict) -> None:
        """Report a Job read directly (adopt), as if a watch event had shown it."""
        await self._apply(obj, deleted=False)

    def vanished(self, job_id: str, name: str, *, run: str | None = None) -> None:
        """A Job the broker expected for `run` is gone: report it failed, once."""
        tracked = self._jobs.setdefault(job_id, _Tracked(name=name, uid=None, run=run))
        if tracked.cancelled or (tracked.state is not None and tracked.state.terminal):
            return
        self._jobs.pop(job_id, None)
        self._send(job_id, JobState.FAILED, VANISHED, f"the Job {name} no longer exists", run=run)

    # -- life ------------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        site = self._client.site
        self._pool = Blocking(1)
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"follow:{site}:watch"),
            asyncio.create_task(self._process(), name=f"follow:{site}:jobs"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STOP_GRACE_S
        # The watch may be between connecting and reading; stop again until it has ended.
        while self._watch_future is not None and not self._watch_future.done():
            if self._handle is not None:
                self._handle.stop()
            if loop.time() > deadline:
                log.warning("%s: the watch thread did not stop in time", self._client.site)
                break
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- list and watch --------------------------------------------------------------------

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        version: str | None = None
        while not self._stopping:
            try:
                if version is None:
                    items, version = await self._client.list_jobs(label_selector=self._selector)
                    self._events.put_nowait(_Event("SNAPSHOT", items=tuple(items)))
                began, since = loop.time(), version
                version = await self._watch(version)
                if version == since and loop.time() - began < _QUICK_WATCH_S:
                    # Ended at once with nothing new (a proxy cutting it short): don't spin.
                    await self._sleep(self._backoff.delay(min(failures, 30), self._rng))
                    failures += 1
                else:
                    failures = 0
            except Expired:
                log.info("%s: watch expired; listing Jobs again", self._client.site)
                version = None
            except ConnectorError as exc:
                if self._stopping:
                    return
                if version is not None and self._handle is not None:
                    version = self._handle.resource_version  # resume after the last event
                level = logging.ERROR if isinstance(exc, AuthFailed) else logging.WARNING
                log.log(level, "following Jobs: %s; reconnecting", exc)  # exc names the site
                await self._sleep(self._backoff.delay(min(failures, 30), self._rng))
                failures += 1

    async def _watch(self, version: str) -> str:
        """One watch request from `version`; returns the version to resume from."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        handle = self._handle = WatchHandle(version)

        def deliver(kind: str, obj: JsonDict) -> None:  # on the watch thread
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(self._events.put_nowait, _Event(kind, obj=obj))

        self._watch_future = asyncio.ensure_future(
            self._pool.run(
                self._client.watch_jobs,
                handle,
                label_selector=self._selector,
                timeout_s=self._watch_timeout_s,
                deliver=deliver,
            )
        )
        await asyncio.shield(self._watch_future)
        return handle.resource_version

    # -- Jobs → updates --------------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            event = await self._events.get()
            try:
                if event.kind == "SNAPSHOT":
                    await self._snapshot(event.items)
                elif event.obj is not None and event.kind in ("ADDED", "MODIFIED", "DELETED"):
                    await self._apply(event.obj, deleted=event.kind == "DELETED")
            except Exception:  # one bad object must not stop the stream
                log.exception("%s: cannot process a Job event", self._client.site)

    async def _snapshot(self, items: tuple[JsonDict, ...]) -> None:
        present = {(job_id_of(obj), _uid(obj)) for obj in items}
        for job_id, tracked in list(self._jobs.items()):
            if tracked.seen and (job_id, tracked.uid) not in present:
                self._jobs.pop(job_id)
                if not tracked.cancelled and not (tracked.state and tracked.state.terminal):
                    self._send(
                        job_id,
                        JobState.FAILED,
                        VANISHED,
                        f"the Job {tracked.name} was deleted",
                        run=tracked.run,
                    )
        for obj in items:
            await self._apply(obj, deleted=False)

    async def _apply(self, obj: JsonDict, *, deleted: bool) -> None:
        job_id = job_id_of(obj)
        if job_id is None:
            return
        uid = _uid(obj)
        name = str((obj.get("metadata") or {}).get("name", ""))
        tracked = self._jobs.get(job_id)
        if tracked is None:
            if deleted:
                return  # never followed; nothing to report
            tracked = self._jobs[job_id] = _Tracked(name=name, uid=uid, run=run_of(obj))
        elif tracked.uid is None:
            tracked.uid = uid
        elif tracked.uid != uid:
            return  # an older (or foreign) incarnation of the same job id
        tracked.run = run_of(obj) or tracked.run
        tracked.seen = True
        change = job_change(obj)
        if deleted:
            self._jobs.pop(job_id, None)
            if change is not None and change.state.terminal:
                await self._report(job_id, tracked, change, obj)
            elif not tracked.cancelled and not (tracked.state and tracked.state.terminal):
                self._send(
                    job_id,
                    JobState.FAILED,
                    VANISHED,
                    f"the Job {name} was deleted",
                    run=tracked.run,
                )
            return
        if change is not None:
            await self._report(job_id, tracked, change, obj)

    async def _report(
        self, job_id: str, tracked: _Tracked, change: JobChange, obj: JsonDict
    ) -> None:
        if tracked.cancelled:
            return
        if tracked.state is not None and (tracked.state.terminal or tracked.state is change.state):
            return
        tracked.state = change.state  # before any await: a concurrent report sees it
        detail = change.detail
        if change.state is JobState.FAILED:
            detail = await self._failure_detail(obj, change.detail)
        self._send(job_id, change.state, change.reason, detail, at=change.at, run=tracked.run)

    async def _failure_detail(self, obj: JsonDict, message: str) -> str:
        spec_selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        name = str((obj.get("metadata") or {}).get("name", ""))
        pod_selector = selector(spec_selector) if spec_selector else f"job-name={name}"
        try:
            pods = await self._client.list_namespaced_pods(label_selector=pod_selector)
        except ConnectorError as exc:
            log.warning("cannot read the pods of Job %s: %s", name, exc)
            return message
        return failure_detail(message, pods)

    def _send(
        self,
        job_id: str,
        state: JobState,
        reason: str,
        detail: str,
        *,
        at: datetime | None = None,
        run: str | None = None,
    ) -> None:
        self._emit(
            StatusUpdate(
                job_id=job_id,
                state=state,
                at=at or self._clock.now(),
                reason=reason,
                detail=detail,
                run=run,
            )
        )


def _uid(obj: JsonDict) -> str | None:
    uid = (obj.get("metadata") or {}).get("uid")
    return str(uid) if uid else None
