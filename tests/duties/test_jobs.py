"""The job coroutines on their own: the registry, the run log, failures and cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.clock import ManualClock
from broker.duties import jobs
from broker.duties.runs import Outcome, RunLog
from tests.duties.conftest import DUTIES, RecordingDuties

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "test-context"


@pytest.fixture
def context() -> Iterator[jobs.JobContext]:
    ctx = jobs.JobContext(duties=RecordingDuties(), runs=RunLog(), clock=ManualClock(T0))
    jobs.register(KEY, ctx)
    yield ctx
    jobs.unregister(KEY)


class SlowPlanner(RecordingDuties):
    """Planning takes 90 s of the manual clock's time, and as long as `release` says."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def plan_capacity(self) -> str:
        self.entered.set()
        self.clock.advance(90)
        await self.release.wait()
        return "planned 3 bursts"


async def test_each_job_calls_its_duty_and_logs_the_outcome(context: jobs.JobContext) -> None:
    for name in DUTIES:
        await getattr(jobs, name)(KEY)

    runs = context.runs.snapshot()
    assert isinstance(context.duties, RecordingDuties)
    assert context.duties.calls == dict.fromkeys(DUTIES, 1)
    assert set(runs) == set(DUTIES)
    for name in DUTIES:
        assert runs[name].outcome is Outcome.OK
        assert runs[name].summary == f"{name} #1"
        assert runs[name].last_started_at == T0
        assert runs[name].runs == 1


async def test_times_come_from_the_context_clock() -> None:
    clock = ManualClock(T0)
    duties = SlowPlanner(clock)
    ctx = jobs.JobContext(duties=duties, runs=RunLog(), clock=clock)
    jobs.register(KEY, ctx)
    try:
        duties.release.set()
        await jobs.plan_capacity(KEY)
    finally:
        jobs.unregister(KEY)

    status = ctx.runs.snapshot()["plan_capacity"]
    assert status.last_started_at == T0
    assert status.last_finished_at == T0 + timedelta(seconds=90)
    assert status.last_duration_s == 90
    assert status.summary == "planned 3 bursts"


async def test_a_failing_duty_is_logged_in_one_line_and_recorded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = jobs.JobContext(
        duties=RecordingDuties(failing=frozenset({"refresh_carbon"})),
        runs=RunLog(),
        clock=ManualClock(T0),
    )
    jobs.register(KEY, ctx)
    caplog.set_level(logging.INFO, logger="broker.duties.jobs")
    try:
        await jobs.refresh_carbon(KEY)  # does not raise
        await jobs.refresh_carbon(KEY)
        await jobs.refresh_inventory(KEY)
    finally:
        jobs.unregister(KEY)

    carbon = ctx.runs.snapshot()["refresh_carbon"]
    assert carbon.outcome is Outcome.FAILED
    assert carbon.summary == "RuntimeError: refresh_carbon broke"
    assert (carbon.runs, carbon.failures) == (2, 2)
    assert ctx.runs.snapshot()["refresh_inventory"].outcome is Outcome.OK
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 2
    assert all(r.exc_info is None for r in failures)  # no traceback at WARNING
    assert "refresh_carbon broke" in failures[0].getMessage()


async def test_a_cancelled_job_records_it_and_ends_quietly() -> None:
    clock = ManualClock(T0)
    duties = SlowPlanner(clock)
    ctx = jobs.JobContext(duties=duties, runs=RunLog(), clock=clock)
    jobs.register(KEY, ctx)
    try:
        task = asyncio.create_task(jobs.plan_capacity(KEY))
        await duties.entered.wait()
        assert ctx.running == {task}
        task.cancel()
        await task  # returns: the executor that ran it needs no traceback for a stop
    finally:
        jobs.unregister(KEY)

    assert ctx.running == set()
    assert ctx.runs.snapshot()["plan_capacity"].outcome is Outcome.CANCELLED


async def test_a_job_without_a_live_context_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.duties.jobs")

    await jobs.reclaim_idle("written-by-another-replica")

    assert "no live context" in caplog.text


def test_a_key_holds_one_context_at_a_time(context: jobs.JobContext) -> None:
    jobs.register(KEY, context)  # the same one again is fine
    other = jobs.JobContext(duties=RecordingDuties(), runs=RunLog(), clock=ManualClock(T0))
    with pytest.raises(ValueError, match="already registered"):
        jobs.register(KEY, other)
    assert jobs.registered(KEY)
