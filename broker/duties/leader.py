"""Leadership for the scheduled work: whoever holds the lease runs the scheduler.

Every replica runs a `Leader`. Every `renew_s` it tries to take or renew the lease (one
atomic upsert, `lease.py`). On winning it registers its job context and starts the
scheduler; on finding the lease held by another, it stops at once.

A leader that cannot reach the database cannot know whether it still leads, so it decides
by its own clock: the lease it last renewed expires at `expires_at`, and it stops the
scheduler (and cancels running jobs) at `expires_at - lease_margin_s`, before anyone else
may take the lease. Renewal attempts are bounded by the same deadline, so a hung database
call cannot carry a leader past it. A follower takes over once the lease has expired by
its clock, so a dead leader is replaced within `lease_ttl_s + renew_s`; a leader that
stops cleanly releases the lease, and a follower takes over within `renew_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import session_factory
from broker.db.leases import Leases, LeaseState, default_holder
from broker.domain.clock import Clock
from broker.duties import jobs
from broker.duties.contract import Duties
from broker.duties.runs import JobStatus, RunLog
from broker.duties.schedule import JobScheduler, create_sync_engine, persisted_next_runs
from broker.duties.settings import ScheduleSettings

log = logging.getLogger(__name__)

LEASE_NAME = "scheduled-jobs"
_EXPECTED = (SQLAlchemyError, OSError, TimeoutError)  # the database is away or slow
_STOP_WAIT_S = 5.0  # how long `stop` waits for cancelled jobs and the release


@dataclass(frozen=True, slots=True)
class LeaderStatus:
    """For the ops endpoint: who leads, as this replica last saw it."""

    replica: str  # this replica's holder id
    is_leader: bool
    holder: str | None  # who held the lease at the last look
    since: datetime | None  # when that holder took it
    expires_at: datetime | None
    last_error: str | None  # the last failed attempt, cleared by a successful one


class Leader:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        duties: Duties,
        settings: ScheduleSettings,
        clock: Clock,
        holder: str | None = None,
        lease_name: str = LEASE_NAME,
    ) -> None:
        self._sessions = session_factory(engine)
        self._leases = Leases(sessions=self._sessions, clock=clock)
        # The job store's own engine; it connects only once this replica leads.
        self._sync_engine = create_sync_engine(engine.url)
        self._settings = settings
        self._clock = clock
        self._holder = holder or default_holder()
        self._lease_name = lease_name
        self._context = jobs.JobContext(duties=duties, runs=RunLog(), clock=clock)
        self._scheduler: JobScheduler | None = None
        self._stop_at: datetime | None = None  # when leading: stop jobs by this time
        self._seen: LeaseState | None = None
        self._last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def is_leader(self) -> bool:
        return self._scheduler is not None

    def status(self) -> LeaderStatus:
        seen = self._seen
        return LeaderStatus(
            replica=self._holder,
            is_leader=self.is_leader,
            holder=seen.holder if seen else None,
            since=seen.acquired_at if seen else None,
            expires_at=seen.expires_at if seen else None,
            last_error=self._last_error,
        )

    def last_runs(self) -> dict[str, JobStatus]:
        """Per job: last start and finish, outcome, summary, next run (while leading)."""
        return self._context.runs.snapshot()

    async def start(self) -> None:
        """Run the election loop in a task (a no-op when scheduled work is disabled)."""
        if not self._settings.enabled:
            log.info("scheduled work disabled; this replica will not run scheduled jobs")
            return
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"scheduled-leader:{self._holder}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop the loop and the jobs; give the lease back unless `release=False`.

        `release=False` leaves the lease to expire, which is what a crash looks like to
        the other replicas.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._step_down("stopping", lost=False)  # in case the caller drove `run` itself
        running = list(self._context.running)
        if running:
            await asyncio.wait(running, timeout=_STOP_WAIT_S)
        if release:
            try:
                async with asyncio.timeout(_STOP_WAIT_S):
                    await self._leases.release(name=self._lease_name, holder=self._holder)
            except _EXPECTED as exc:
                log.warning("could not release the scheduled-jobs lease: %s", exc)
        await asyncio.sleep(0)  # let APScheduler's deferred shutdown run before disposal
        self._sync_engine.dispose()

    async def run(self) -> None:
        """Try the lease every `renew_s` until cancelled; lead while holding it."""
        try:
            while True:
                try:
                    await self._tick()
                except Exception:  # a bug in one tick must not end the election for good
                    log.exception("scheduled-jobs leader tick failed")
                    self._failed_unexpectedly()
                await asyncio.sleep(self._pause_s())
        finally:
            self._step_down("stopping", lost=False)

    async def _tick(self) -> None:
        now = self._clock.now()
        if self._stop_at is not None and now >= self._stop_at:
            self._step_down("the lease could not be renewed in time")
        budget = self._settings.renew_s
        if self._stop_at is not None:
            budget = max(0.0, (self._stop_at - now).total_seconds())
        try:
            async with asyncio.timeout(budget):
                state = await self._leases.acquire_or_renew(
                    name=self._lease_name, holder=self._holder, ttl_s=self._settings.lease_ttl_s
                )
                if state is None:
                    self._seen = await self._leases.read(self._lease_name)
                elif not self.is_leader:
                    await self._take_over(state)
        except _EXPECTED as exc:
            self._failed(exc)
            return
        self._last_error = None
        if state is None:
            holder = self._seen.holder if self._seen else "nobody"
            self._step_down(f"the lease is held by {holder}")
            return
        self._seen = state
        if self.is_leader:
            self._stop_at = state.expires_at - timedelta(seconds=self._settings.lease_margin_s)

    async def _take_over(self, state: LeaseState) -> None:
        persisted = await persisted_next_runs(self._sessions)
        jobs.register(self._holder, self._context)
        runs = self._context.runs
        scheduler = JobScheduler(
            engine=self._sync_engine,
            context_key=self._holder,
            settings=self._settings,
            now=self._clock.now(),
            persisted=persisted,
            on_next_run=lambda job, at: runs.scheduled(job, next_run_at=at),
        )
        try:
            scheduler.start()  # writes the job rows: sync I/O, see schedule.py
        except BaseException:
            jobs.unregister(self._holder)
            raise
        self._scheduler = scheduler
        log.info(
            "leading the scheduled work as %s (lease until %s)", self._holder, state.expires_at
        )

    def _failed(self, exc: BaseException) -> None:
        detail = str(exc).splitlines()[0] if str(exc) else "no answer in time"
        message = f"{type(exc).__name__}: {detail}"
        if message != self._last_error:  # one line per distinct error, not one per tick
            log.warning("scheduled-jobs lease attempt failed: %s", message)
        self._last_error = message
        if self._stop_at is not None and self._clock.now() >= self._stop_at:
            self._step_down("the lease could not be renewed in time")

    def _failed_unexpectedly(self) -> None:
        self._last_error = "unexpected error; see the log"
        if self._stop_at is not None and self._clock.now() >= self._stop_at:
            self._step_down("the lease could not be renewed in time")

    def _step_down(self, reason: str, *, lost: bool = True) -> None:
        """Stop the scheduler and cancel the running jobs.

        Synchronous on purpose: nothing can run between deciding and doing.
        """
        scheduler, self._scheduler = self._scheduler, None
        self._stop_at = None
        if scheduler is None:
            return
        jobs.unregister(self._holder)
        scheduler.stop()
        for task in self._context.running:
            task.cancel()
        log.log(
            logging.WARNING if lost else logging.INFO,
            "stopped running the scheduled work: %s",
            reason,
        )

    def _pause_s(self) -> float:
        if self._stop_at is None:
            return self._settings.renew_s
        left = (self._stop_at - self._clock.now()).total_seconds()
        return max(0.0, min(self._settings.renew_s, left))
