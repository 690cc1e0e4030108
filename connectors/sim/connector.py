"""The demo fleet's connector: a virtual site whose jobs run faster than real time.

A job "runs" for `estimated_duration_s / speed` wall seconds after a short start delay, then
succeeds. To show a failure, give the workload `SIM_EXIT_CODE=<n>` in its env: the job fails
half-way with that exit code. A replica of an inference service runs until it is stopped;
RUNNING means ready to serve.

The site's runs live in a run book (`broker.domain.runs`), which the broker keeps in its
database, so the simulator behaves like a cluster shared by every replica: `dispatch`
writes a run, `cancel` deletes it (from any replica), and whichever replica iterates
`updates()` (the one holding the site's follow lease) watches the book and simulates every
run in it, resuming each from its record after a takeover. Each update names its run, so
the broker drops one from an earlier run of the same job. Without a book from the broker
(tests, tools) the connector keeps one in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

from broker.domain.clock import Clock
from broker.domain.enums import Ability, Health, JobState, SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from broker.domain.runs import RunBook, SimRun
from connectors.base import BuildContext, Connector, SiteInventory, StatusUpdate
from connectors.settings import SiteSettings, pools_from_settings, site_from_settings
from connectors.sim.runbook import MemoryRunBook

_CLOSED = object()
POLL_S = 0.5  # how often the follower looks for runs other replicas dispatched or cancelled
# An ended run's record, like a finished Job's TTL: long enough for a follower that takes
# over to report the end again; a run whose record is gone while its placement is still
# active is put back by the follower's resync (`adopt`) and ends at once. Short, because the
# follower reads every record of its site on each look.
KEEP_ENDED = timedelta(minutes=1)
COALESCE_S = 0.05  # dispatches in a burst wake the follower once
SERVICE_RUN_S = 10 * 365 * 86400.0  # "until stopped"


class SimConnector(Connector):
    kind = SiteKind.SIM
    lacks = frozenset({Ability.PROVISION})

    def __init__(
        self,
        *,
        site: Site,
        pools: tuple[GpuPool, ...],
        speed: float,
        start_delay_s: float,
        clock: Clock,
        runs: RunBook | None = None,
    ) -> None:
        self._site = site
        self._pools = pools
        self._speed = speed
        self._start_delay_s = start_delay_s
        self._clock = clock
        self._book: RunBook = runs if runs is not None else MemoryRunBook()
        # runs simulated by this replica's follower, by job: (run id, its task)
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._emitted: dict[tuple[str, str], JobState] = {}  # (job, run) → last state sent
        self._queue: asyncio.Queue[StatusUpdate | object] = asyncio.Queue()
        self._poke = asyncio.Event()
        self._closed = False

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> SimConnector:
        return cls(
            site=site_from_settings(site),
            pools=pools_from_settings(site),
            speed=context.sim.speed,
            start_delay_s=context.sim.start_delay_s,
            clock=context.clock,
            runs=context.runs,
        )

    @property
    def site_name(self) -> str:
        return self._site.name

    def set_health(self, health: Health, reason: str = "") -> None:
        """Simulate an outage or recovery (tests and demos)."""
        self._site = replace(self._site, health=health, health_reason=reason)

    async def inventory(self) -> SiteInventory:
        return SiteInventory(site=self._site, pools=self._pools)

    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        run = await self._book.put(self._new_run(job, placement, at=self._clock.now()))
        self._poke.set()
        return _external_id(run)

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        """Make sure the placement's run is in the book (one dispatched before the book
        existed, or lost): rebuilt from the placement's recorded times."""
        if placement.started_at is not None:
            at = placement.started_at - timedelta(seconds=self._start_delay_s)
        else:
            at = placement.created_at
        await self._book.put(self._new_run(job, placement, at=at))
        self._poke.set()

    async def owned(self) -> dict[str, str]:
        return {r.job_id: _external_id(r) for r in await self._book.runs(self._site.name)}

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        run = None
        if external_id is not None and "@" in external_id:
            run = external_id.rsplit("@", 1)[1]  # only that run: never a later one
        await self._book.remove(site=self._site.name, job_id=job_id, run=run)
        self._poke.set()
        held = self._tasks.get(job_id)
        if held is not None and (run is None or held[0] == run):
            del self._tasks[job_id]
            held[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held[1]

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        """Follow the site: simulate every run in the book until the iteration ends."""
        watch = asyncio.create_task(self._watch(), name=f"sim:{self._site.name}:watch")
        try:
            while True:
                item = await self._queue.get()
                if item is _CLOSED:
                    return
                assert isinstance(item, StatusUpdate)
                yield item
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await self._stop_runs()

    async def close(self) -> None:
        self._closed = True
        await self._stop_runs()
        self._queue.put_nowait(_CLOSED)

    # -- the follower --------------------------------------------------------------------

    def _new_run(self, job: Job, placement: Placement, *, at: datetime) -> SimRun:
        run_s = job.spec.estimated_duration_s / self._speed
        if job.spec.service_id is not None:
            run_s = SERVICE_RUN_S  # a service's replica serves until the broker stops it
        try:
            exit_code = int(job.spec.workload.env.get("SIM_EXIT_CODE", "0"))
        except ValueError:
            exit_code = 1  # a code that is not a number still fails the job
        if exit_code != 0:
            run_s /= 2
        return SimRun(
            site=self._site.name,
            job_id=job.id,
            run=placement.run or "0",  # a placement made before run ids
            dispatched_at=at,
            start_delay_s=self._start_delay_s,
            run_s=run_s,
            exit_code=exit_code,
        )

    async def _watch(self) -> None:
        while not self._closed:
            self._poke.clear()
            runs = await self._book.runs(self._site.name)
            now = self._clock.now()
            live = {r.job_id: r for r in runs}
            for job_id, (run, task) in list(self._tasks.items()):
                kept = live.get(job_id)
                if kept is None or kept.run != run:  # cancelled, or replaced by a later run
                    del self._tasks[job_id]
                    task.cancel()
            for r in runs:
                ended = self._emitted.get((r.job_id, r.run))
                if ended is not None and ended.terminal:
                    if now - r.ends_at > KEEP_ENDED:
                        await self._book.remove(site=r.site, job_id=r.job_id, run=r.run)
                        del self._emitted[(r.job_id, r.run)]
                    continue
                if r.job_id not in self._tasks:
                    task = asyncio.create_task(
                        self._simulate(r), name=f"sim:{self._site.name}:{r.job_id}"
                    )
                    self._tasks[r.job_id] = (r.run, task)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=POLL_S)
                await asyncio.sleep(COALESCE_S)

    async def _stop_runs(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _simulate(self, run: SimRun) -> None:
        """Send the run's RUNNING and final updates when they are due (at once when a
        takeover finds them overdue, dated when they were due)."""
        began = self._clock.now()
        to_running = max(0.0, (run.running_at - began).total_seconds())
        to_end = max(to_running, (run.ends_at - began).total_seconds())
        await asyncio.sleep(to_running)
        self._emit(
            run, JobState.RUNNING, "started", f"simulated on {self._site.name}", at=run.running_at
        )
        await asyncio.sleep(to_end - to_running)
        if run.exit_code != 0:
            self._emit(
                run,
                JobState.FAILED,
                "exit_code",
                f"container exited with code {run.exit_code}",
                at=run.ends_at,
            )
        else:
            self._emit(run, JobState.SUCCEEDED, "completed", "exit code 0", at=run.ends_at)

    def _emit(
        self, run: SimRun, state: JobState, reason: str, detail: str, *, at: datetime
    ) -> None:
        if self._emitted.get((run.job_id, run.run)) is state:
            return
        self._emitted[(run.job_id, run.run)] = state
        self._queue.put_nowait(
            StatusUpdate(
                job_id=run.job_id,
                state=state,
                at=min(at, self._clock.now()),
                reason=reason,
                detail=detail,
                run=run.run,
            )
        )


def _external_id(run: SimRun) -> str:
    return f"sim-{run.job_id}@{run.run}"
