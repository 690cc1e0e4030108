"""The APScheduler wiring with a real AsyncIOScheduler and the real job table."""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, make_url, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.db.connection import session_factory
from broker.db.models import apscheduler_jobs
from broker.domain.clock import SystemClock
from broker.duties import jobs
from broker.duties.runs import Outcome, RunLog
from broker.duties.schedule import (
    JOB_IDS,
    JobScheduler,
    create_sync_engine,
    persisted_next_runs,
    sync_database_url,
)
from broker.duties.settings import ScheduleSettings
from tests.duties.conftest import DUTIES, FAST, RecordingDuties, eventually


@pytest.mark.parametrize(
    ("url", "sync"),
    [
        ("sqlite+aiosqlite:///data/broker.db", "sqlite:///data/broker.db"),
        ("sqlite:///broker.db", "sqlite:///broker.db"),
        ("postgresql+asyncpg://u:pw@db:5432/broker", "postgresql+psycopg://u:pw@db:5432/broker"),
        ("postgresql://u@db/broker", "postgresql+psycopg://u@db/broker"),
    ],
)
def test_the_job_store_url_is_the_apps_with_a_sync_driver(url: str, sync: str) -> None:
    assert sync_database_url(url).render_as_string(hide_password=False) == sync


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="PostgreSQL or SQLite"):
        sync_database_url("mysql+aiomysql://u@db/broker")


def test_settings_refuse_a_renewal_slower_than_the_lease_allows() -> None:
    with pytest.raises(ValueError, match="renew_s"):
        ScheduleSettings(lease_ttl_s=15, renew_s=10)


@pytest.fixture
def sync_engine(engine: AsyncEngine) -> Iterator[Engine]:
    eng = create_sync_engine(engine.url)
    yield eng
    eng.dispose()


async def job_rows(engine: AsyncEngine) -> dict[str, tuple[float, tuple[object, ...]]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(apscheduler_jobs))).all()
    return {r.id: (r.next_run_time, pickle.loads(r.job_state)["args"]) for r in rows}


async def start(
    *, sync_engine: Engine, engine: AsyncEngine, key: str, settings: ScheduleSettings
) -> tuple[JobScheduler, RunLog]:
    runs = RunLog()
    scheduler = JobScheduler(
        engine=sync_engine,
        context_key=key,
        settings=settings,
        now=datetime.now(UTC),
        persisted=await persisted_next_runs(session_factory(engine)),
        on_next_run=lambda job, at: runs.scheduled(job, next_run_at=at),
    )
    scheduler.start()
    return scheduler, runs


async def test_jobs_are_stored_once_under_stable_ids_across_restarts(
    engine: AsyncEngine, sync_engine: Engine
) -> None:
    first, runs = await start(
        sync_engine=sync_engine, engine=engine, key="first", settings=ScheduleSettings()
    )
    first.stop()
    stored = await job_rows(engine)
    second, _ = await start(
        sync_engine=sync_engine, engine=engine, key="second", settings=ScheduleSettings()
    )
    second.stop()
    restarted = await job_rows(engine)

    assert set(stored) == set(JOB_IDS) == set(DUTIES)
    async with engine.connect() as conn:
        states = (
            await conn.execute(select(apscheduler_jobs.c.id, apscheduler_jobs.c.job_state))
        ).all()
    # what is pickled is a reference to the module-level coroutine and a key, nothing live
    assert {pickle.loads(s)["func"] for _, s in states} == {
        f"broker.duties.jobs:{job}" for job in DUTIES
    }
    assert set(restarted) == set(JOB_IDS)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(apscheduler_jobs)) == 5
    # the rows now name the live context of whoever started last...
    assert {args for _, args in restarted.values()} == {("second",)}
    # ...and keep their next run: a restart does not push the daily retraining back a day
    assert restarted["retrain_forecast"][0] == pytest.approx(stored["retrain_forecast"][0])
    next_retrain = runs.snapshot()["retrain_forecast"].next_run_at
    assert next_retrain is not None
    assert next_retrain - datetime.now(UTC) > timedelta(hours=23)


async def test_rows_stored_under_the_old_module_path_are_rewritten_on_start(
    engine: AsyncEngine, sync_engine: Engine
) -> None:
    """The duties' package was `broker.scheduled` before it was renamed: a database that an
    older broker wrote names callables that no longer import. A start replaces each row
    (same id, the stored next run kept) without ever unpickling the stale reference."""
    first, _ = await start(
        sync_engine=sync_engine, engine=engine, key="old", settings=ScheduleSettings()
    )
    first.stop()
    stored = await job_rows(engine)
    async with engine.begin() as conn:
        for row in (await conn.execute(select(apscheduler_jobs))).all():
            state = pickle.loads(row.job_state)
            state["func"] = state["func"].replace("broker.duties.", "broker.scheduled.")
            await conn.execute(
                apscheduler_jobs.update()
                .where(apscheduler_jobs.c.id == row.id)
                .values(job_state=pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
            )

    second, _ = await start(
        sync_engine=sync_engine, engine=engine, key="new", settings=ScheduleSettings()
    )
    second.stop()

    async with engine.connect() as conn:
        states = (await conn.execute(select(apscheduler_jobs.c.job_state))).scalars().all()
    assert {pickle.loads(s)["func"] for s in states} == {
        f"broker.duties.jobs:{job}" for job in DUTIES
    }
    restarted = await job_rows(engine)
    assert restarted["retrain_forecast"][0] == pytest.approx(stored["retrain_forecast"][0])


async def test_a_shortened_interval_brings_the_next_run_forward(
    engine: AsyncEngine, sync_engine: Engine
) -> None:
    daily, _ = await start(
        sync_engine=sync_engine, engine=engine, key="a", settings=ScheduleSettings()
    )
    daily.stop()
    hourly, _ = await start(
        sync_engine=sync_engine,
        engine=engine,
        key="a",
        settings=ScheduleSettings(retrain_every_s=3600),
    )
    hourly.stop()

    next_run = (await job_rows(engine))["retrain_forecast"][0]
    assert next_run - datetime.now(UTC).timestamp() == pytest.approx(3600, abs=60)


async def test_a_failing_duty_does_not_stop_the_other_jobs(
    engine: AsyncEngine, sync_engine: Engine
) -> None:
    duties = RecordingDuties(failing=frozenset({"refresh_carbon"}))
    runs_seen = RunLog()
    jobs.register("k", jobs.JobContext(duties=duties, runs=runs_seen, clock=SystemClock()))
    scheduler, _ = await start(sync_engine=sync_engine, engine=engine, key="k", settings=FAST)
    try:
        await eventually(
            lambda: all(duties.calls[d] >= 3 for d in DUTIES),
            within_s=3,
            what=f"every duty ran three times: {duties.calls}",
        )
    finally:
        scheduler.stop()
        jobs.unregister("k")

    carbon = runs_seen.snapshot()["refresh_carbon"]
    assert carbon.outcome is Outcome.FAILED
    assert carbon.failures >= 3
    assert runs_seen.snapshot()["plan_capacity"].outcome is Outcome.OK


async def test_the_scheduler_survives_a_job_store_that_cannot_write(
    engine: AsyncEngine,
    sync_engine: Engine,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # APScheduler 3 lets an error saving a job escape its wake-up, after which it never
    # wakes again; ObservedJobStore must log it and carry on.
    if not database_url.startswith("sqlite"):
        pytest.skip("holds SQLite's write lock from a second connection")
    duties = RecordingDuties()
    jobs.register("k", jobs.JobContext(duties=duties, runs=RunLog(), clock=SystemClock()))
    scheduler, _ = await start(sync_engine=sync_engine, engine=engine, key="k", settings=FAST)
    blocker = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # take the write lock: every save now fails
        try:
            await eventually(
                lambda: "could not save job" in caplog.text, within_s=3, what="a failed save"
            )
        finally:
            blocker.execute("ROLLBACK")
        before = sum(duties.calls.values())
        await eventually(
            lambda: sum(duties.calls.values()) >= before + 10,
            within_s=3,
            what="jobs run again once the store can write",
        )
    finally:
        blocker.close()
        scheduler.stop()
        jobs.unregister("k")
