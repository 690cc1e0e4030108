"""The job side of the store, state changes: place, preempt, defer, run, finish, cancel.

Each state change is one transaction that (1) moves the job with a compare-and-set on its
current state, (2) adjusts the per-node GPU ledger with conditional UPDATEs that cannot
overdraw it, and (3) appends the event. If any step finds the world changed under it, the
whole transaction rolls back and the caller sees `None`/`False`; nothing is half-written.
That is what lets two broker replicas share one PostgreSQL without double-allocating GPUs.
The scheduling loop commits a pass's plain placements and deferrals through
`broker.db.batch` instead, many per transaction, with the same guarantees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.db import ledger
from broker.db.codec import (
    condition_columns,
    job_from_row,
    placement_columns,
    placement_from_row,
)
from broker.db.job_queries import JobQueries
from broker.db.models import JobEventRow, JobRow, PlacementRow
from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.enums import TRANSITIONS, JobState, Tier
from broker.domain.errors import (
    InvalidTransition,
    JobAlreadyFinished,
    JobNotFound,
)
from broker.domain.jobs import Job, Placement

log = logging.getLogger(__name__)


class _Abort(Exception):
    """Raised inside a transaction to roll it back when a guard fails."""


@dataclass(frozen=True, slots=True)
class Released:
    """What a finished job gave back, for the caller's metrics and follow-ups."""

    job: Job
    placement: Placement | None


class JobTransitions(JobQueries):
    async def place(
        self,
        *,
        job: Job,
        placement: Placement,
        reason: str,
        preempt: Sequence[str] = (),
        preempt_reason: str = "",
    ) -> list[Placement] | None:
        """pending → scheduled with an allocation, after preempting `preempt` first.

        All in one transaction: the victims go running → preempted → pending and give their
        GPUs back, then the job takes its nodes. Returns the victims' released placements
        (for the caller to stop them on their site), or None when the job, a victim or the
        capacity moved meanwhile, in which case nothing changed.
        """
        now = self._clock.now()
        released: list[Placement] = []
        try:
            async with self._sessions() as s, s.begin():
                for victim in preempt:
                    got = await self._preempt(s, victim, now, preempt_reason, by=job.spec.tier)
                    if got is None:
                        raise _Abort
                    released.append(got)
                if not await self._cas(
                    s,
                    job.id,
                    (JobState.PENDING, JobState.DEFERRED),
                    JobState.SCHEDULED,
                    reason,
                    now,
                    f"site {placement.site}, pool {placement.pool_id}",
                ):
                    raise _Abort  # also undoes any preemption above
                if not await self._take(s, placement):
                    raise _Abort
                s.add(PlacementRow(**placement_columns(placement, at=now)))
        except _Abort:
            return None
        return released

    async def _preempt(
        self, s: AsyncSession, job_id: str, at: datetime, reason: str, *, by: Tier | None
    ) -> Placement | None:
        """running/scheduled → preempted → pending, giving its GPUs back (caller's txn).

        `by`: the tier of the job it is preempted for; None when its site stopped it. The
        job's condition then says so, without naming the other job (the condition is
        shown to the job's tenant as stored; the event keeps the full record)."""
        if not await self._cas(
            s,
            job_id,
            (JobState.RUNNING, JobState.SCHEDULED),
            JobState.PREEMPTED,
            "preempted",
            at,
            reason,
        ):
            return None
        placement = await self._release_active(s, job_id, at)
        tier = await s.scalar(select(JobRow.tier).where(JobRow.id == job_id))
        if not await self._cas(
            s,
            job_id,
            (JobState.PREEMPTED,),
            JobState.PENDING,
            "requeued",
            at,
            "back in the queue after preemption",
            condition=_preempted(by=by, tier=Tier(tier) if tier else None, detail=reason, at=at),
        ):
            return None
        return placement

    async def requeue(
        self, job_id: str, *, reason: str, at: datetime, run: str | None = None
    ) -> Released | None:
        """A run its site stopped (its node went away): running/scheduled → preempted →
        pending, its GPUs given back; None when the job was in neither state or `run` is
        not its current run."""
        async with self._sessions() as s, s.begin():
            if not await self._is_current(s, job_id, run):
                return None
            placement = await self._preempt(s, job_id, at, reason, by=None)
            if placement is None:
                return None
            row = await s.scalar(select(JobRow).where(JobRow.id == job_id))
            assert row is not None
            return Released(job=job_from_row(row), placement=placement)

    async def defer(self, job_id: str, *, until: datetime, reason: str) -> bool:
        """pending → deferred until `until` (a cleaner window that still meets the deadline)."""
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            if not await self._cas(
                s, job_id, (JobState.PENDING,), JobState.DEFERRED, "deferred", now, reason
            ):
                return False
            await s.execute(update(JobRow).where(JobRow.id == job_id).values(not_before=until))
        return True

    async def release_deferred(self) -> int:
        """deferred → pending for every job whose window has come; returns how many."""
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            due = list(
                await s.scalars(
                    select(JobRow.id).where(
                        JobRow.state == JobState.DEFERRED.value, JobRow.not_before <= now
                    )
                )
            )
            for job_id in due:
                await self._cas(
                    s,
                    job_id,
                    (JobState.DEFERRED,),
                    JobState.PENDING,
                    "window_reached",
                    now,
                    "its deferral window has come",
                )
        return len(due)

    async def mark_running(
        self, job_id: str, *, at: datetime, detail: str = "", run: str | None = None
    ) -> bool:
        """scheduled → running, when `run` (if given) is the job's current run."""
        async with self._sessions() as s, s.begin():
            if not await self._is_current(s, job_id, run):
                return False
            if not await self._cas(
                s, job_id, (JobState.SCHEDULED,), JobState.RUNNING, "started", at, detail
            ):
                return False
            await s.execute(
                update(PlacementRow)
                .where(PlacementRow.job_id == job_id, PlacementRow.active.is_(True))
                .values(started_at=at)
            )
        return True

    async def finish(
        self,
        job_id: str,
        *,
        state: JobState,
        reason: str,
        detail: str = "",
        at: datetime | None = None,
        run: str | None = None,
    ) -> Released | None:
        """Move a job to a terminal state (or back to pending) and release its allocation.

        None when there is nothing to do: the job has ended already, `run` (if given) is not
        its current run, or the job's state cannot go to `state` (an update about a run the
        broker has already stopped: preempted and requeued, say).
        """
        at = at or self._clock.now()
        async with self._sessions() as s, s.begin():
            row = await s.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None:
                raise JobNotFound(job_id)
            src = JobState(row.state)
            if src.terminal:
                return None
            if src is not state and state not in TRANSITIONS[src]:
                log.debug("job %s is %s: not moving it to %s", job_id, src.value, state.value)
                return None
            if not await self._is_current(s, job_id, run):
                return None
            if not await self._cas(s, job_id, (src,), state, reason, at, detail):
                return None
            placement = await self._release_active(s, job_id, at)
            await s.refresh(row)
            return Released(job=job_from_row(row), placement=placement)

    async def _release_active(self, s: AsyncSession, job_id: str, at: datetime) -> Placement | None:
        prow = await s.scalar(
            select(PlacementRow).where(PlacementRow.job_id == job_id, PlacementRow.active.is_(True))
        )
        if prow is None:
            return None
        prow.active = False
        prow.ended_at = at
        placement = placement_from_row(prow)
        await self._give_back(s, placement)
        return placement

    async def cancel(self, job_id: str, *, tenant: str | None, reason: str) -> Released:
        """Cancel a job; cancelling a cancelled job is a no-op, a finished one an error."""
        detail = await self.get_job(job_id, tenant=tenant)
        job = detail.job
        if job.state is JobState.CANCELLED:
            return Released(job=job, placement=None)
        if job.state.terminal:
            raise JobAlreadyFinished(job_id=job_id, state=job.state.value)
        released = await self.finish(job_id, state=JobState.CANCELLED, reason=reason)
        if released is None:  # it finished or changed while we looked: report what it is now
            now = (await self.get_job(job_id)).job
            if now.state is JobState.CANCELLED:
                return Released(job=now, placement=None)
            if now.state.terminal:
                raise JobAlreadyFinished(job_id=job_id, state=now.state.value)
            return await self.cancel(job_id, tenant=tenant, reason=reason)
        return released

    async def _is_current(self, s: AsyncSession, job_id: str, run: str | None) -> bool:
        """Whether an update about `run` concerns the job's current placement (None: an
        update that names no run, taken to mean the current one)."""
        if run is None:
            return True
        current = (
            await s.execute(
                select(PlacementRow.run).where(
                    PlacementRow.job_id == job_id, PlacementRow.active.is_(True)
                )
            )
        ).first()
        if current is None or (current.run is not None and current.run != run):
            log.debug("job %s: dropping an update about run %s, not its current run", job_id, run)
            return False
        return True

    async def _take(self, s: AsyncSession, placement: Placement) -> bool:
        """Book the placement's share on each of its nodes, or nothing if any lacks room."""
        conn = await s.connection()
        book = await ledger.lock(conn, [placement])
        if not book.take(placement):
            return False
        await book.write(conn)
        return True

    async def _give_back(self, s: AsyncSession, placement: Placement) -> None:
        conn = await s.connection()
        book = await ledger.lock(conn, [placement])
        book.give_back(placement)
        await book.write(conn)

    async def _cas(
        self,
        s: AsyncSession,
        job_id: str,
        src: Sequence[JobState],
        dst: JobState,
        reason: str,
        at: datetime,
        detail: str = "",
        *,
        condition: Condition | None = None,
    ) -> bool:
        """Compare-and-set the job's state inside the caller's transaction, with its event.
        Every move sets the job's condition: `condition`, else none (a new state says
        the rest; the scheduler gives a pending job its reason on its next pass)."""
        for state in src:
            if state is not dst and dst not in TRANSITIONS[state]:
                raise InvalidTransition(job_id=job_id, src=state.value, dst=dst.value)
        cur = await s.scalar(select(JobRow.state).where(JobRow.id == job_id))
        if cur is None or JobState(cur) not in src:
            return False
        res = await s.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == cur)
            .values(
                state=dst.value,
                state_reason=reason,
                updated_at=at,
                version=JobRow.version + 1,
                **condition_columns(condition),
            )
        )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return False
        s.add(
            JobEventRow(
                job_id=job_id,
                at=at,
                from_state=cur,
                to_state=dst.value,
                reason=reason,
                detail=detail,
            )
        )
        return True


def _preempted(*, by: Tier | None, tier: Tier | None, detail: str, at: datetime) -> Condition:
    """The condition of a job that lost its GPUs: to a higher tier, to a quota owner taking
    back what it borrowed (`broker.domain.policy.preemption`, rule 1), or to its site."""
    if by is None:
        reason, message = Reason.STOPPED_BY_SITE, f"its site stopped it: {detail}"
    elif tier is not None and by.rank < tier.rank:
        reason, message = Reason.PREEMPTED_BY_HIGHER_TIER, f"preempted for a {by.value} job"
    else:
        reason = Reason.QUOTA_RECLAIMED
        message = "preempted: the tenant whose idle quota it borrowed needed it back"
    return Condition(type=ConditionType.PREEMPTED, reason=reason, message=message, since=at)
