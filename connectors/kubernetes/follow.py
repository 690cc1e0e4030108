"""Following the broker's Jobs and its service replicas' Deployments: each kind is listed and
watched (see `watching`), and a single task turns the objects into `StatusUpdate`s, emitting
each job's transition once however often a re-list or a reconnect shows the same state
again. A Job maps through `status.job_change`, a replica's Deployment through
`status.replica_change` (SCHEDULED until its pod is ready, then RUNNING; FAILED when it
exceeds its progress deadline); one that disappears while the broker still wants it is
reported FAILED with the reason `vanished`, whichever kind it was.

The follower also knows each job's decided nodes (from its placement), for the connector's
drift check (see `drift`); a job whose pinned pod can never be bound is sent back with
`requeue`: its Job or Deployment is removed first (through the connector's `remove`, so a
replica's Service goes with its last Deployment; a later dispatch of the same job id must
not adopt the stuck object) and the job is reported PREEMPTED, the state a job that lost its
place passes through on its way back to the queue, with the reason `node_gone: <node>`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.clock import Clock
from broker.domain.enums import JobState
from connectors.base import StatusUpdate
from connectors.errors import ConnectorError, NotFound
from connectors.kubernetes.client import KubeClient
from connectors.kubernetes.drift import Expected
from connectors.kubernetes.labels import selector
from connectors.kubernetes.manifest import job_id_of, run_of
from connectors.kubernetes.replicas import service_of
from connectors.kubernetes.status import JobChange, failure_detail, job_change, replica_change
from connectors.kubernetes.watching import Event, ListWatch, Watch
from connectors.retry import Backoff

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
VANISHED = "vanished"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What the site runs for one job: its Job, or (with `service`) a replica's Deployment
    (`service` "" when the replica's service is not known)."""

    job_id: str
    name: str
    service: str | None = None


# Removes a job's object (and, for a replica, its Service when it was the last); raises
# NotFound when it is gone already.
Remove = Callable[[Target], Awaitable[None]]


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
    service: str | None = None  # a replica's service: it is a Deployment, not a Job

    @property
    def kind(self) -> str:
        return "Job" if self.service is None else "Deployment"


class JobFollower:
    """Turns the namespace's broker-owned Jobs and Deployments into StatusUpdates."""

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
        remove: Remove,
    ) -> None:
        self._client = client
        self._clock = clock
        self._emit = emit
        self._remove = remove
        self._jobs: dict[str, _Tracked] = {}
        # (from the Deployment stream?, event): one task applies both streams
        self._events: asyncio.Queue[tuple[bool, Event]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        owned = selector(owner_labels)

        def stream(
            what: str,
            lister: Callable[..., Awaitable[tuple[list[JsonDict], str]]],
            watch: Watch,
            *,
            replicas: bool,
        ) -> ListWatch:
            return ListWatch(
                what=what,
                site=client.site,
                lister=lambda: lister(label_selector=owned),
                watch=watch,
                selector=owned,
                backoff=backoff,
                sleep=sleep,
                watch_timeout_s=watch_timeout_s,
                deliver=lambda event: self._events.put_nowait((replicas, event)),
            )

        self._watches = (
            stream("Jobs", client.list_jobs, client.watch_jobs, replicas=False),
            stream("Deployments", client.list_deployments, client.watch_deployments, replicas=True),
        )

    # -- what the connector tells the follower ---------------------------------------------

    def track(
        self,
        *,
        job_id: str,
        name: str,
        uid: str | None,
        nodes: tuple[str, ...] = (),
        run: str | None = None,
        service: str | None = None,
    ) -> None:
        """Follow a Job (or, with `service`, a replica's Deployment) the broker just created
        or adopted (a new incarnation), whose pods belong on `nodes`."""
        current = self._jobs.get(job_id)
        if current is None or current.uid != uid or current.cancelled:
            self._jobs[job_id] = _Tracked(name=name, uid=uid, nodes=nodes, run=run, service=service)
        else:
            current.nodes = nodes
            current.run = run or current.run
            current.service = service or current.service

    def target(self, job_id: str) -> Target | None:
        """What the follower knows the site runs for `job_id`."""
        tracked = self._jobs.get(job_id)
        if tracked is None:
            return None
        return Target(job_id=job_id, name=tracked.name, service=tracked.service)

    def expected(self) -> dict[str, Expected]:
        """Where the pods of each live, pinned job belong (for the drift check)."""
        return {
            job_id: Expected(uid=t.uid, nodes=t.nodes)
            for job_id, t in self._jobs.items()
            if t.nodes and not t.cancelled and not (t.state is not None and t.state.terminal)
        }

    async def requeue(self, job_id: str, *, reason: str, detail: str) -> bool:
        """Remove the job's Job (or Deployment) and report the job PREEMPTED, once; False
        when it is not followed any more or the removal failed (the next check tries again)."""
        tracked = self._jobs.get(job_id)
        if tracked is None or tracked.cancelled:
            return False
        if tracked.state is not None and tracked.state.terminal:
            return False
        tracked.cancelled = True  # set before the await: its DELETED event is not a vanishing
        try:
            await self._remove(Target(job_id=job_id, name=tracked.name, service=tracked.service))
        except NotFound:
            pass
        except ConnectorError as exc:
            tracked.cancelled = False
            log.warning(
                "cannot delete %s %s to requeue job %s: %s", tracked.kind, tracked.name, job_id, exc
            )
            return False
        self._send(job_id, JobState.PREEMPTED, reason, detail, run=tracked.run)
        return True

    def cancelled(self, job_id: str) -> None:
        tracked = self._jobs.get(job_id)
        if tracked is not None:
            tracked.cancelled = True

    async def observe(self, obj: JsonDict, *, replica: bool = False) -> None:
        """Report a Job (or a replica's Deployment) read directly (adopt), as if a watch
        event had shown it."""
        await self._apply(obj, deleted=False, replica=replica)

    def vanished(
        self, job_id: str, name: str, *, run: str | None = None, service: str | None = None
    ) -> None:
        """A Job (or Deployment) the broker expected for `run` is gone: report it failed,
        once."""
        tracked = self._jobs.setdefault(
            job_id, _Tracked(name=name, uid=None, run=run, service=service)
        )
        if tracked.cancelled or (tracked.state is not None and tracked.state.terminal):
            return
        self._jobs.pop(job_id, None)
        self._send(
            job_id,
            JobState.FAILED,
            VANISHED,
            f"the {tracked.kind} {name} no longer exists",
            run=run,
        )

    # -- life ------------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is not None:
            return
        for watch in self._watches:
            watch.start()
        self._task = asyncio.create_task(self._process(), name=f"follow:{self._client.site}:jobs")

    async def stop(self) -> None:
        await asyncio.gather(*(watch.stop() for watch in self._watches))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- objects → updates -----------------------------------------------------------------

    async def _process(self) -> None:
        while True:
            replica, event = await self._events.get()
            try:
                if event.kind == "SNAPSHOT":
                    await self._snapshot(event.items, replica=replica)
                elif event.obj is not None and event.kind in ("ADDED", "MODIFIED", "DELETED"):
                    await self._apply(event.obj, deleted=event.kind == "DELETED", replica=replica)
            except Exception:  # one bad object must not stop the stream
                kind = "Deployment" if replica else "Job"
                log.exception("%s: cannot process a %s event", self._client.site, kind)

    async def _snapshot(self, items: tuple[JsonDict, ...], *, replica: bool) -> None:
        present = {(job_id_of(obj), _uid(obj)) for obj in items}
        for job_id, tracked in list(self._jobs.items()):
            if (tracked.service is not None) != replica:
                continue  # the other stream's
            if tracked.seen and (job_id, tracked.uid) not in present:
                self._jobs.pop(job_id)
                if not tracked.cancelled and not (tracked.state and tracked.state.terminal):
                    self._send(
                        job_id,
                        JobState.FAILED,
                        VANISHED,
                        f"the {tracked.kind} {tracked.name} was deleted",
                        run=tracked.run,
                    )
        for obj in items:
            await self._apply(obj, deleted=False, replica=replica)

    async def _apply(self, obj: JsonDict, *, deleted: bool, replica: bool) -> None:
        job_id = job_id_of(obj)
        if job_id is None:
            return
        service = (service_of(obj) or "") if replica else None  # "": a replica, service unknown
        uid = _uid(obj)
        name = str((obj.get("metadata") or {}).get("name", ""))
        tracked = self._jobs.get(job_id)
        if tracked is None:
            if deleted:
                return  # never followed; nothing to report
            tracked = self._jobs[job_id] = _Tracked(
                name=name, uid=uid, run=run_of(obj), service=service
            )
        elif (tracked.service is not None) != replica:
            return  # a Job and a Deployment for one job id: only the followed kind counts
        elif tracked.uid is None:
            tracked.uid = uid
        elif tracked.uid != uid:
            return  # an older (or foreign) incarnation of the same job id
        tracked.run = run_of(obj) or tracked.run
        tracked.seen = True
        change = replica_change(obj) if replica else job_change(obj)
        if deleted:
            self._jobs.pop(job_id, None)
            if change is not None and change.state.terminal:
                await self._report(job_id, tracked, change, obj)
            elif not tracked.cancelled and not (tracked.state and tracked.state.terminal):
                self._send(
                    job_id,
                    JobState.FAILED,
                    VANISHED,
                    f"the {tracked.kind} {name} was deleted",
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
            log.warning("cannot read the pods of %s %s: %s", obj.get("kind") or "", name, exc)
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
