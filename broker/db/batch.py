"""The job side of the store, a scheduling pass's state changes in bulk: place, defer, ids.

`JobTransitions.place` spends a transaction and some eight ORM round trips on each job,
milliseconds of CPU that cap the loop near a hundred commits a second. Here one transaction
commits a whole batch in a handful of Core statements and keeps the same guarantees (see
`broker.db.transitions`) by locking rather than by one conditional UPDATE per row:

1. Read the batch's job rows and the ledger rows of every node it touches
   (`broker.db.ledger`), on PostgreSQL with `SELECT ... FOR UPDATE` in one fixed order
   (jobs before nodes, ids in byte order),
   so two replicas' batches queue behind each other instead of deadlocking. On SQLite the
   `BEGIN IMMEDIATE` of every write transaction (`broker.db.connection`) already makes writers
   take turns.
2. Check each decision, in the caller's order, against that snapshot, applying the accepted
   ones to it: a decision whose job moved (cancelled, placed by another replica) or whose
   nodes lack room is skipped and reported back as not committed; the others go ahead.
3. Write the accepted ones with executemany: the jobs' compare-and-sets, their events, the
   placements, and the ledger as compare-and-sets on the values read. Where the driver
   counts the rows an executemany touched (SQLite), a count short of the expected one
   raises `ConcurrentUpdate`: a write never lands on a row that changed after its check.

Any error rolls the whole batch back, so nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.db import ledger
from broker.db.codec import condition_columns, placement_columns
from broker.db.models import Base
from broker.db.store_base import StoreBase
from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.enums import JobState
from broker.domain.jobs import Placement

JOBS: Table = Base.metadata.tables["jobs"]
EVENTS: Table = Base.metadata.tables["job_events"]
PLACEMENTS: Table = Base.metadata.tables["placements"]

# Ids per IN list: well below SQLite's (32,766) and PostgreSQL's (32,767) bind parameter
# limits, whatever the batch size.
IN_CHUNK = 500

PLACEABLE = (JobState.PENDING, JobState.DEFERRED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deferral:
    """pending → deferred until `until`, with why (the event's detail)."""

    job_id: str
    until: datetime
    reason: str


def _locks_rows(conn: AsyncConnection) -> bool:
    """Whether this database needs row locks (PostgreSQL) or serialises writers (SQLite)."""
    return conn.dialect.name == "postgresql"


async def _lock_jobs(conn: AsyncConnection, job_ids: Iterable[str]) -> dict[str, JobState]:
    """The current state of each job that exists, its row locked until commit."""
    states: dict[str, JobState] = {}
    for chunk in ledger.chunks(sorted(set(job_ids)), IN_CHUNK):
        q = select(JOBS.c.id, JOBS.c.state).where(JOBS.c.id.in_(chunk))
        if _locks_rows(conn):  # "C": byte order, the same as `sorted` above for UTF-8
            q = q.order_by(JOBS.c.id.collate("C")).with_for_update()
        for job_id, state in await conn.execute(q):
            states[job_id] = JobState(state)
    return states


async def _write_events(
    conn: AsyncConnection,
    moves: Sequence[tuple[str, JobState]],
    *,
    to: JobState,
    at: datetime,
    reason: str,
    details: Sequence[str],
) -> None:
    await conn.execute(
        insert(EVENTS),
        [
            {
                "job_id": job_id,
                "at": at,
                "from_state": src.value,
                "to_state": to.value,
                "reason": reason,
                "detail": detail,
            }
            for (job_id, src), detail in zip(moves, details, strict=True)
        ],
    )


class BatchTransitions(StoreBase):
    async def place_many(self, placements: Sequence[Placement], *, reason: str) -> list[bool]:
        """pending/deferred → scheduled with an allocation, for many jobs in one transaction.

        What `place` does without victims, for each placement in order (each for its
        `job_id`). Returns, for each, whether it was committed: False when its job was no
        longer pending or deferred, or its nodes had no room (also when an earlier
        placement of the batch took it).
        """
        if not placements:
            return []
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            conn = await s.connection()
            states = await _lock_jobs(conn, (p.job_id for p in placements))
            book = await ledger.lock(conn, placements)
            done: list[bool] = []
            moves: list[tuple[str, JobState]] = []
            taken: list[Placement] = []
            for p in placements:
                src = states.get(p.job_id)
                if src is None or src not in PLACEABLE or not book.take(p):
                    done.append(False)
                    continue
                done.append(True)
                states[p.job_id] = JobState.SCHEDULED  # the same job again: not placeable
                moves.append((p.job_id, src))
                taken.append(p)
            if not moves:
                return done
            await ledger.execute_checked(
                conn,
                update(JOBS)
                .where(JOBS.c.id == bindparam("b_id"), JOBS.c.state == bindparam("b_src"))
                .values(
                    state=JobState.SCHEDULED.value,
                    state_reason=reason,
                    updated_at=now,
                    version=JOBS.c.version + 1,
                    **condition_columns(None),  # placed: nothing to wait for
                ),
                [{"b_id": job_id, "b_src": src.value} for job_id, src in moves],
                what="jobs",
            )
            await book.write(conn)
            await conn.execute(insert(PLACEMENTS), [placement_columns(p, at=now) for p in taken])
            await _write_events(
                conn,
                moves,
                to=JobState.SCHEDULED,
                at=now,
                reason=reason,
                details=[f"site {p.site}, pool {p.pool_id}" for p in taken],
            )
        return done

    async def defer_many(self, deferrals: Sequence[Deferral]) -> list[bool]:
        """pending → deferred for many jobs in one transaction; for each, whether it moved."""
        if not deferrals:
            return []
        now = self._clock.now()
        async with self._sessions() as s, s.begin():
            conn = await s.connection()
            states = await _lock_jobs(conn, (d.job_id for d in deferrals))
            done: list[bool] = []
            taken: list[Deferral] = []
            for d in deferrals:
                ok = states.get(d.job_id) is JobState.PENDING
                done.append(ok)
                if ok:
                    states[d.job_id] = JobState.DEFERRED
                    taken.append(d)
            if not taken:
                return done
            await ledger.execute_checked(
                conn,
                update(JOBS)
                .where(JOBS.c.id == bindparam("b_id"), JOBS.c.state == JobState.PENDING.value)
                .values(
                    state=JobState.DEFERRED.value,
                    state_reason="deferred",
                    updated_at=now,
                    version=JOBS.c.version + 1,
                    not_before=bindparam("b_until"),
                    condition_type=ConditionType.DEFERRED.value,
                    condition_reason=Reason.CARBON_WINDOW.value,
                    condition_message=bindparam("b_message"),
                    condition_since=now,
                ),
                [
                    {
                        "b_id": d.job_id,
                        "b_until": d.until,
                        "b_message": f"until {d.until.isoformat()}: {d.reason}",
                    }
                    for d in taken
                ],
                what="jobs",
            )
            await _write_events(
                conn,
                [(d.job_id, JobState.PENDING) for d in taken],
                to=JobState.DEFERRED,
                at=now,
                reason="deferred",
                details=[d.reason for d in taken],
            )
        return done

    async def set_conditions(self, changes: Mapping[str, Condition]) -> int:
        """Set the conditions of waiting jobs, in one transaction; a job that is no longer
        pending keeps its own (its move set it). Returns how many rows changed."""
        if not changes:
            return 0
        async with self._sessions() as s, s.begin():
            conn = await s.connection()
            result = await conn.execute(
                update(JOBS)
                .where(
                    JOBS.c.id == bindparam("b_id"),
                    JOBS.c.state == JobState.PENDING.value,
                )
                .values(
                    condition_type=bindparam("b_type"),
                    condition_reason=bindparam("b_reason"),
                    condition_message=bindparam("b_message"),
                    condition_since=bindparam("b_since"),
                ),
                [
                    {
                        "b_id": job_id,
                        "b_type": c.type.value,
                        "b_reason": c.reason.value,
                        "b_message": c.message,
                        "b_since": c.since,
                    }
                    for job_id, c in changes.items()
                ],
            )
            return max(0, result.rowcount)

    async def set_external_ids(self, external_ids: Mapping[str, str]) -> None:
        """Record the sites' ids of many jobs' active placements, in one transaction."""
        if not external_ids:
            return
        async with self._sessions() as s, s.begin():
            conn = await s.connection()
            # Find the rows first, then update by key: per job, "job_id = ? AND active"
            # makes SQLite (no statistics) walk the whole `active` index for every row.
            rows: list[dict[str, Any]] = []
            for chunk in ledger.chunks(list(external_ids), IN_CHUNK):
                found = await conn.execute(
                    select(PLACEMENTS.c.id, PLACEMENTS.c.job_id).where(
                        PLACEMENTS.c.job_id.in_(chunk), PLACEMENTS.c.active.is_(True)
                    )
                )
                rows.extend({"b_id": pk, "b_external": external_ids[job]} for pk, job in found)
            if rows:
                await conn.execute(
                    update(PLACEMENTS)
                    .where(PLACEMENTS.c.id == bindparam("b_id"), PLACEMENTS.c.active.is_(True))
                    .values(external_id=bindparam("b_external")),
                    rows,
                )
