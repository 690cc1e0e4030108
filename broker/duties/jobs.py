"""The scheduled jobs: module-level coroutines that look up the live broker by a key.

APScheduler's persistent job store pickles each job: the callable by its textual reference
("broker.duties.jobs:refresh_carbon") and its arguments by value. The broker's services
(sessions, HTTP clients, connectors) cannot be pickled, and a row written by one replica is
run by whichever replica leads next, so a job's only argument is a string key, and the
live `JobContext` it stands for sits in this process-local registry: the leader registers
it when it starts the scheduler and removes it when it stops. A job whose key is not
registered here (a row not yet rewritten by this process's leader) logs and does nothing.

Each job runs one `Duties` method, records the outcome in the `RunLog` with times from the
context's clock, and never raises: a failing duty is logged in one line and the scheduler
carries on with the next run and the other jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from broker.domain.clock import Clock
from broker.duties.contract import Duties
from broker.duties.runs import Outcome, RunLog

log = logging.getLogger(__name__)

_SUMMARY_MAX = 500  # characters kept of a summary or error message


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job needs at run time; never pickled, never leaves the process."""

    duties: Duties
    runs: RunLog
    clock: Clock
    # Jobs running now, so that the leader can cancel them the moment it loses the lease
    # and wait for them on shutdown (APScheduler's own cancel comes a loop iteration later).
    running: set[asyncio.Task[Any]] = field(default_factory=set)


_contexts: dict[str, JobContext] = {}


def register(key: str, context: JobContext) -> None:
    if key in _contexts and _contexts[key] is not context:
        raise ValueError(f"job context {key!r} is already registered")
    _contexts[key] = context


def unregister(key: str) -> None:
    _contexts.pop(key, None)


def registered(key: str) -> bool:
    return key in _contexts


async def retrain_forecast(context_key: str) -> None:
    await _run(context_key, job="retrain_forecast", duty=lambda d: d.retrain_forecast())


async def plan_capacity(context_key: str) -> None:
    await _run(context_key, job="plan_capacity", duty=lambda d: d.plan_capacity())


async def refresh_carbon(context_key: str) -> None:
    await _run(context_key, job="refresh_carbon", duty=lambda d: d.refresh_carbon())


async def refresh_inventory(context_key: str) -> None:
    await _run(context_key, job="refresh_inventory", duty=lambda d: d.refresh_inventory())


async def reclaim_idle(context_key: str) -> None:
    await _run(context_key, job="reclaim_idle", duty=lambda d: d.reclaim_idle())


async def _run(context_key: str, *, job: str, duty: Callable[[Duties], Awaitable[str]]) -> None:
    ctx = _contexts.get(context_key)
    if ctx is None:
        log.warning("scheduled job %s skipped: no live context %r here", job, context_key)
        return
    task = asyncio.current_task()
    if task is None:  # not in a task: nothing could cancel it anyway
        await _run_duty(ctx, job=job, duty=duty)
        return
    ctx.running.add(task)
    try:
        await _run_duty(ctx, job=job, duty=duty)
    finally:
        ctx.running.discard(task)


async def _run_duty(ctx: JobContext, *, job: str, duty: Callable[[Duties], Awaitable[str]]) -> None:
    started = ctx.clock.now()
    ctx.runs.started(job, at=started)
    try:
        summary = await duty(ctx.duties)
    except asyncio.CancelledError:
        # The executor cancels running jobs when the scheduler stops (leadership lost or
        # shutdown). Returning instead of re-raising keeps APScheduler from logging a
        # traceback for an ordinary stop; nothing awaits this task but the executor.
        ctx.runs.finished(job, at=ctx.clock.now(), outcome=Outcome.CANCELLED, summary="")
        log.info("scheduled job %s cancelled: the scheduler is stopping", job)
        return
    except Exception as exc:  # a duty's failure is its own; the schedule must go on
        message = f"{type(exc).__name__}: {exc}"[:_SUMMARY_MAX]
        ctx.runs.finished(job, at=ctx.clock.now(), outcome=Outcome.FAILED, summary=message)
        log.warning("scheduled job %s failed: %s", job, message)
        log.debug("scheduled job %s failure detail", job, exc_info=True)
        return
    finished = ctx.clock.now()
    summary = summary[:_SUMMARY_MAX]
    ctx.runs.finished(job, at=finished, outcome=Outcome.OK, summary=summary)
    log.info(
        "scheduled job %s done in %.1fs: %s",
        job,
        (finished - started).total_seconds(),
        summary,
    )
