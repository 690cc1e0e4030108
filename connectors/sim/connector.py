"""The demo fleet's connector: a virtual site whose jobs run faster than real time.

A job "runs" for `estimated_duration_s / speed` wall seconds after a short start delay, then
succeeds. To show a failure, give the workload `SIM_EXIT_CODE=<n>` in its env: the job fails
half-way with that exit code. The simulator keeps no state of its own; after a broker
restart `adopt` resumes each job from the start time the broker recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import replace

from broker.domain.clock import Clock
from broker.domain.enums import Ability, Health, JobState, SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from connectors.base import BuildContext, Connector, SiteInventory, StatusUpdate
from connectors.settings import SiteSettings, pools_from_settings, site_from_settings

_CLOSED = object()


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
    ) -> None:
        self._site = site
        self._pools = pools
        self._speed = speed
        self._start_delay_s = start_delay_s
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._queue: asyncio.Queue[StatusUpdate | object] = asyncio.Queue()
        self._closed = False

    @classmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> SimConnector:
        return cls(
            site=site_from_settings(site),
            pools=pools_from_settings(site),
            speed=context.sim.speed,
            start_delay_s=context.sim.start_delay_s,
            clock=context.clock,
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
        external_id = f"sim-{job.id}"
        if job.id not in self._tasks:  # a retried dispatch adopts the running simulation
            self._run(job, started=False, elapsed_s=0.0)
        return external_id

    async def adopt(self, *, job: Job, placement: Placement) -> None:
        if job.id in self._tasks:
            return
        elapsed = 0.0
        if placement.started_at is not None:
            elapsed = (self._clock.now() - placement.started_at).total_seconds()
        self._run(job, started=placement.started_at is not None, elapsed_s=elapsed)

    async def owned(self) -> dict[str, str]:
        return {job_id: f"sim-{job_id}" for job_id in self._tasks}

    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def updates(self) -> AsyncIterator[StatusUpdate]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return
            assert isinstance(item, StatusUpdate)
            yield item

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.put_nowait(_CLOSED)

    def _run(self, job: Job, *, started: bool, elapsed_s: float) -> None:
        if self._closed:
            return
        task = asyncio.create_task(
            self._simulate(job, started=started, elapsed_s=elapsed_s),
            name=f"sim:{self._site.name}:{job.id}",
        )
        self._tasks[job.id] = task
        task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(job_id) is task:
            del self._tasks[job_id]

    async def _simulate(self, job: Job, *, started: bool, elapsed_s: float) -> None:
        run_s = job.spec.estimated_duration_s / self._speed
        exit_code = job.spec.workload.env.get("SIM_EXIT_CODE", "0")
        failing = exit_code != "0"
        if failing:
            run_s /= 2
        if not started:
            await asyncio.sleep(self._start_delay_s)
            self._emit(job.id, JobState.RUNNING, "started", f"simulated on {self._site.name}")
        await asyncio.sleep(max(0.0, run_s - elapsed_s))
        if failing:
            self._emit(
                job.id, JobState.FAILED, "exit_code", f"container exited with code {exit_code}"
            )
        else:
            self._emit(job.id, JobState.SUCCEEDED, "completed", "exit code 0")

    def _emit(self, job_id: str, state: JobState, reason: str, detail: str) -> None:
        self._queue.put_nowait(
            StatusUpdate(
                job_id=job_id, state=state, at=self._clock.now(), reason=reason, detail=detail
            )
        )
