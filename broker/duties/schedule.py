"""The APScheduler wiring: five interval jobs in a persistent job store.

The job store is APScheduler 3's `SQLAlchemyJobStore` on a *sync* engine for the broker's
own database (APScheduler 3 has no async store), writing the `apscheduler_jobs` table that
migration 0006 creates. Two consequences shape this module:

* The store runs its queries on the event loop thread. They are few (a read and a write
  when a job fires, a handful when the scheduler starts), and the engine bounds how long
  one can block: a short connect/statement timeout on PostgreSQL, a short busy timeout on
  SQLite. The SQLite one matters most: if an async transaction of this process holds the
  write lock across an await, a blocking write here cannot succeed until the loop runs
  again, so it must give up quickly rather than wait.
* APScheduler 3 does not catch errors from the store's `update_job` and
  `get_next_run_time` when it processes due jobs, and one such error leaves the scheduler
  with no wake-up timer, silently idle for good. `ObservedJobStore` turns those errors
  into a log line (and a retry wake-up), and reports each job's next run time to the
  `RunLog` so the ops endpoint needs no query.

Jobs are registered with stable ids and `replace_existing=True` each time a leader starts,
so a restart or failover rewrites the five rows (with this process's context key) instead
of adding more; a job keeps its persisted next run time, so a daily job is not pushed back
a day by every deploy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, select
from sqlalchemy import create_engine as create_sync_engine_
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.models import apscheduler_jobs
from broker.duties.settings import ScheduleSettings

log = logging.getLogger(__name__)

_JOBS_MODULE = "broker.duties.jobs"
# After a failed store query, look again this soon (or at the shortest job interval).
_STORE_RETRY_S = 10.0
_PG_TIMEOUT_S = 2  # libpq's minimum connect timeout; also the statement/lock timeout
_SQLITE_BUSY_TIMEOUT_S = 0.5

NextRunCallback = Callable[[str, datetime | None], None]


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str  # the stable row id in apscheduler_jobs, also the job's name in the RunLog
    func: str  # textual reference, pickled into the row
    every_s: float


def job_specs(settings: ScheduleSettings) -> tuple[JobSpec, ...]:
    every = {
        "retrain_forecast": settings.retrain_every_s,
        "plan_capacity": settings.plan_every_s,
        "refresh_carbon": settings.carbon_every_s,
        "refresh_inventory": settings.inventory_every_s,
        "reclaim_idle": settings.reclaim_every_s,
    }
    return tuple(JobSpec(id=j, func=f"{_JOBS_MODULE}:{j}", every_s=s) for j, s in every.items())


JOB_IDS: tuple[str, ...] = tuple(spec.id for spec in job_specs(ScheduleSettings()))


def sync_database_url(url: str | URL) -> URL:
    """The sync-driver URL for the app's database: aiosqlite -> sqlite, asyncpg -> psycopg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"the job store needs PostgreSQL or SQLite, not {backend}")


def create_sync_engine(url: str | URL) -> Engine:
    """A small sync engine for the job store whose queries cannot block the loop for long."""
    sync_url = sync_database_url(url)
    if sync_url.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"timeout": _SQLITE_BUSY_TIMEOUT_S}
    else:
        ms = _PG_TIMEOUT_S * 1000
        connect_args = {
            "connect_timeout": _PG_TIMEOUT_S,
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        }
    return create_sync_engine_(
        sync_url, connect_args=connect_args, pool_size=1, max_overflow=1, pool_pre_ping=True
    )


class ObservedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]  # apscheduler is untyped
    """The SQLAlchemy job store, reporting next run times and surviving database errors."""

    def __init__(self, *, engine: Engine, on_next_run: NextRunCallback, retry_s: float) -> None:
        super().__init__(engine=engine)
        self._on_next_run = on_next_run
        self._retry = timedelta(seconds=retry_s)
        self._backoff_until: datetime | None = None
        # Off while the scheduler starts, when `update_job` is how `replace_existing`
        # rewrites the rows: a failure there must fail the start, not leave stale rows.
        self.tolerant = False

    def add_job(self, job: Any) -> None:
        super().add_job(job)
        self._on_next_run(job.id, job.next_run_time)

    def update_job(self, job: Any) -> None:
        if self._backing_off():
            # It failed a moment ago; trying again now would only block the loop again
            # (for the driver's timeout) for every other job due in this wake-up.
            return
        try:
            super().update_job(job)
        except (SQLAlchemyError, JobLookupError) as exc:
            if not self.tolerant:
                raise
            # The row keeps its old, past next run time, which would make the scheduler
            # wake at once and fail again in a tight loop; wake after `retry_s` instead,
            # when the job is due again and (coalesced) runs once more.
            log.warning("job store: could not save job %s: %s", job.id, _brief(exc))
            self._backoff_until = datetime.now(UTC) + self._retry
            return
        self._backoff_until = None
        self._on_next_run(job.id, job.next_run_time)

    def _backing_off(self) -> bool:
        until = self._backoff_until
        return self.tolerant and until is not None and datetime.now(UTC) < until

    def remove_job(self, job_id: str) -> None:
        super().remove_job(job_id)
        self._on_next_run(job_id, None)

    def get_next_run_time(self) -> datetime | None:
        try:
            next_run: datetime | None = super().get_next_run_time()
        except SQLAlchemyError as exc:
            log.warning("job store: could not read the next run time: %s", _brief(exc))
            return datetime.now(UTC) + self._retry
        backoff = self._backoff_until
        if backoff is not None and (next_run is None or next_run < backoff):
            return backoff
        return next_run


async def persisted_next_runs(sessions: async_sessionmaker[AsyncSession]) -> dict[str, datetime]:
    """Each stored job's next run time, read without blocking the loop."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(apscheduler_jobs.c.id, apscheduler_jobs.c.next_run_time).where(
                    apscheduler_jobs.c.next_run_time.is_not(None)
                )
            )
        ).all()
    return {job_id: datetime.fromtimestamp(ts, UTC) for job_id, ts in rows}


class JobScheduler:
    """One APScheduler instance with the five jobs; start it once, stop it once."""

    def __init__(
        self,
        *,
        engine: Engine,
        context_key: str,
        settings: ScheduleSettings,
        now: datetime,
        persisted: Mapping[str, datetime],
        on_next_run: NextRunCallback,
    ) -> None:
        """Add the jobs as pending; `start` writes them to the store.

        `persisted` (from `persisted_next_runs`) keeps each job's stored next run time, or
        `now` plus the interval if that is sooner (the interval was shortened). A next run
        time in the past makes the job due at once: with `coalesce` it runs once, and a
        grace of one interval means the latest missed run is never discarded as too late.
        """
        specs = job_specs(settings)
        self._store = ObservedJobStore(
            engine=engine,
            on_next_run=on_next_run,
            retry_s=min(_STORE_RETRY_S, *(spec.every_s for spec in specs)),
        )
        self._scheduler = AsyncIOScheduler(
            jobstores={"default": self._store},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        for spec in specs:
            first = now + timedelta(seconds=spec.every_s)
            if spec.id in persisted:
                first = min(first, persisted[spec.id])
            self._scheduler.add_job(
                spec.func,
                trigger=IntervalTrigger(seconds=spec.every_s, timezone=UTC),
                args=(context_key,),
                id=spec.id,
                name=spec.id,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, math.ceil(spec.every_s)),
                next_run_time=first,
            )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start on the running loop; raises (leaving it stopped) if the store fails."""
        try:
            self._scheduler.start()
        except BaseException:
            self.stop()
            raise
        self._store.tolerant = True

    def stop(self) -> None:
        """Stop firing jobs. APScheduler finishes this on the loop's next iteration."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


def _brief(exc: BaseException) -> str:
    """The first line of an error: SQLAlchemy's messages carry the statement and a link."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
