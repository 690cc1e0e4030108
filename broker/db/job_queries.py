"""The job side of the store, reads and submission: create, get, list, the queue."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from broker.db.codec import (
    event_from_row,
    job_from_row,
    placement_from_row,
)
from broker.db.models import JobEventRow, JobRow, PlacementRow
from broker.db.store_base import StoreBase
from broker.domain.bounds import ascii_int
from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.errors import (
    IdempotencyConflict,
    JobNotFound,
)
from broker.domain.jobs import Job, JobEvent, JobSpec, Placement
from broker.domain.serde import spec_to_dict


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    placement: Placement | None
    events: tuple[JobEvent, ...]


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[Job, ...]
    next_cursor: str | None


MAX_CURSOR = 64  # base64 of "s:" and 19 digits is 28 characters


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The sequence number in a cursor this store made; InvalidCursor for anything else,
    including a number the `seq` column (BIGINT) cannot hold."""
    if len(cursor) > MAX_CURSOR:
        raise InvalidCursor(cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(cursor) from exc
    prefix, _, num = raw.partition(":")
    seq = ascii_int(num)
    if prefix != "s" or seq is None:
        raise InvalidCursor(cursor)
    return seq


class JobQueries(StoreBase):
    async def create_job(
        self,
        *,
        tenant: str,
        spec: JobSpec,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[Job, bool]:
        """Insert a pending job; with a known key, return the earlier job (created=False)."""
        if idempotency_key is not None:
            earlier = await self._by_key(tenant, idempotency_key, request_hash)
            if earlier is not None:
                return earlier, False
        now = self._clock.now()
        job_id = f"job-{uuid.uuid4().hex}"
        row = JobRow(
            id=job_id,
            tenant=tenant,
            name=spec.name,
            tier=spec.tier.value,
            kind=spec.kind.value,
            state=JobState.PENDING.value,
            state_reason="submitted",
            spec=spec_to_dict(spec),
            gpu_milli=spec.resources.total_milli,
            estimated_duration_s=spec.estimated_duration_s,
            deadline=spec.deadline,
            preemptible=spec.is_preemptible,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            version=1,
            created_at=now,
            updated_at=now,
            service_id=spec.service_id,
        )
        try:
            async with self._sessions.begin() as s:
                s.add(row)
                await s.flush()
                s.add(
                    JobEventRow(
                        job_id=job_id,
                        at=now,
                        from_state=None,
                        to_state=JobState.PENDING.value,
                        reason="submitted",
                        detail="",
                    )
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            # A concurrent request with the same key won the race: answer with its job.
            earlier = await self._by_key(tenant, idempotency_key, request_hash)
            if earlier is None:
                raise
            return earlier, False
        return job_from_row(row), True

    async def _by_key(self, tenant: str, key: str, request_hash: str | None) -> Job | None:
        async with self._sessions() as s:
            row = await s.scalar(
                select(JobRow).where(JobRow.tenant == tenant, JobRow.idempotency_key == key)
            )
            if row is None:
                return None
            if row.request_hash != request_hash:
                raise IdempotencyConflict(key=key, job_id=row.id)
            return job_from_row(row)

    async def get_job(self, job_id: str, *, tenant: str | None = None) -> JobDetail:
        """The job with its current placement and history; another tenant's job is not found."""
        async with self._sessions() as s:
            row = await s.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None or (tenant is not None and row.tenant != tenant):
                raise JobNotFound(job_id)
            prow = await s.scalar(
                select(PlacementRow)
                .where(PlacementRow.job_id == job_id)
                .order_by(PlacementRow.id.desc())
                .limit(1)
            )
            events = await s.scalars(
                select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
            )
            return JobDetail(
                job=job_from_row(row),
                placement=placement_from_row(prow) if prow is not None else None,
                events=tuple(event_from_row(e) for e in events),
            )

    async def list_jobs(
        self,
        *,
        tenant: str | None,
        states: Iterable[JobState] = (),
        tiers: Iterable[Tier] = (),
        kinds: Iterable[JobKind] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first; `cursor` is the opaque `next_cursor` of the previous page."""
        q = select(JobRow).order_by(JobRow.seq.desc()).limit(limit + 1)
        if tenant is not None:
            q = q.where(JobRow.tenant == tenant)
        if state_values := [s.value for s in states]:
            q = q.where(JobRow.state.in_(state_values))
        if tier_values := [t.value for t in tiers]:
            q = q.where(JobRow.tier.in_(tier_values))
        if kind_values := [k.value for k in kinds]:
            q = q.where(JobRow.kind.in_(kind_values))
        if cursor is not None:
            q = q.where(JobRow.seq < decode_cursor(cursor))
        async with self._sessions() as s:
            rows = list(await s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        return JobPage(
            jobs=tuple(job_from_row(r) for r in rows),
            next_cursor=encode_cursor(rows[-1].seq) if more and rows else None,
        )

    async def queued_jobs(self, *, limit: int) -> list[Job]:
        """Pending jobs, most urgent tier first, oldest first within a tier."""
        q = (
            select(JobRow)
            .where(JobRow.state == JobState.PENDING.value)
            .order_by(JobRow.tier, JobRow.seq)
            .limit(limit)
        )
        async with self._sessions() as s:
            return [job_from_row(r) for r in await s.scalars(q)]

    async def active_placements(self, *, site: str | None = None) -> list[tuple[Job, Placement]]:
        """Every job holding an allocation with its placement (on `site`, when given)."""
        q = (
            select(JobRow, PlacementRow)
            .join(PlacementRow, PlacementRow.job_id == JobRow.id)
            .where(PlacementRow.active.is_(True))
            .order_by(PlacementRow.id)
        )
        if site is not None:
            q = q.where(PlacementRow.site == site)
        async with self._sessions() as s:
            return [(job_from_row(j), placement_from_row(p)) for j, p in await s.execute(q)]

    async def count_by_state(self) -> dict[JobState, int]:
        q = select(JobRow.state, func.count()).group_by(JobRow.state)
        async with self._sessions() as s:
            counts = {JobState(state): n for state, n in await s.execute(q)}
        return {state: counts.get(state, 0) for state in JobState}
