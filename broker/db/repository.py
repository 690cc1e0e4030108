"""The store: every read and write of jobs, placements, events and the GPU ledger.

Each state change is one transaction that (1) moves the job with a compare-and-set on its
current state, (2) adjusts the pool ledger with a conditional UPDATE that cannot overdraw
it, and (3) appends the event. If any step finds the world changed under it, the whole
transaction rolls back and the caller sees `None`/`False`; nothing is half-written. That is
what lets two broker replicas share one PostgreSQL without double-allocating GPUs.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.codec import (
    event_from_row,
    job_from_row,
    placement_from_row,
    pool_from_row,
    site_from_row,
)
from broker.db.models import JobEventRow, JobRow, PlacementRow, PoolNodeRow, PoolRow, SiteRow
from broker.domain.clock import Clock
from broker.domain.enums import TRANSITIONS, Health, JobKind, JobState, Tier
from broker.domain.errors import (
    IdempotencyConflict,
    InvalidTransition,
    JobAlreadyFinished,
    JobNotFound,
)
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, Site
from broker.domain.jobs import Job, JobEvent, JobSpec, Placement
from broker.domain.serde import spec_to_dict
from broker.domain.work import RunningWork


class InvalidCursor(ValueError):
    pass


class _Abort(Exception):
    """Raised inside a transaction to roll it back when a guard fails."""


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    placement: Placement | None
    events: tuple[JobEvent, ...]


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[Job, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Released:
    """What a finished job gave back, for the caller's metrics and follow-ups."""

    job: Job
    placement: Placement | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(cursor) from exc
    prefix, _, num = raw.partition(":")
    if prefix != "s" or not num.isdigit():
        raise InvalidCursor(cursor)
    return int(num)


class Store:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    # ---- fleet ---------------------------------------------------------------------------

    async def sync_site(self, site: Site, pools: Sequence[GpuPool]) -> None:
        """Upsert a site and its pools' capacity; the allocation ledger is left as it is."""
        now = self._clock.now()
        async with self._sessions.begin() as s:
            row = await s.get(SiteRow, site.name)
            if row is None:
                row = SiteRow(name=site.name)
                s.add(row)
            row.kind, row.region, row.location = site.kind.value, site.region, site.location
            row.grid_zone, row.private, row.pue = site.grid_zone, site.private, site.pue
            row.health, row.health_reason, row.updated_at = (
                site.health.value,
                site.health_reason,
                now,
            )
            for pool in pools:
                prow = await s.get(PoolRow, pool.id)
                if prow is None:
                    prow = PoolRow(id=pool.id, site=site.name)
                    s.add(prow)
                prow.gpu_model, prow.gpu_memory_gb = pool.gpu_model, pool.gpu_memory_gb
                prow.gpus_per_node, prow.nodes = pool.gpus_per_node, pool.nodes
                prow.mig_profiles = list(pool.mig_profiles)
                prow.price_on_demand, prow.price_spot = pool.price_on_demand, pool.price_spot
                prow.cpu_per_node = pool.cpu_per_node
                prow.memory_gb_per_node = pool.memory_gb_per_node
                prow.updated_at = now
                await s.flush()
                have = set(
                    await s.scalars(select(PoolNodeRow.idx).where(PoolNodeRow.pool_id == pool.id))
                )
                s.add_all(
                    PoolNodeRow(pool_id=pool.id, idx=i, allocated_milli=0)
                    for i in range(pool.nodes)
                    if i not in have
                )

    async def set_site_health(self, name: str, health: Health, reason: str = "") -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(SiteRow)
                .where(SiteRow.name == name)
                .values(health=health.value, health_reason=reason, updated_at=self._clock.now())
            )

    async def sites(self) -> list[Site]:
        async with self._sessions() as s:
            rows = await s.scalars(select(SiteRow).order_by(SiteRow.name))
            return [site_from_row(r) for r in rows]

    async def pools(self) -> list[GpuPool]:
        async with self._sessions() as s:
            rows = list(await s.scalars(select(PoolRow).order_by(PoolRow.site, PoolRow.id)))
            used: dict[str, dict[int, int]] = {}
            for pool_id, idx, milli in await s.execute(
                select(PoolNodeRow.pool_id, PoolNodeRow.idx, PoolNodeRow.allocated_milli)
            ):
                used.setdefault(pool_id, {})[idx] = milli
        return [pool_from_row(r, used.get(r.id, {})) for r in rows]

    # ---- jobs: submission and queries ---------------------------------------------------

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

    async def active_placements(self) -> list[tuple[Job, Placement]]:
        q = (
            select(JobRow, PlacementRow)
            .join(PlacementRow, PlacementRow.job_id == JobRow.id)
            .where(PlacementRow.active.is_(True))
            .order_by(PlacementRow.id)
        )
        async with self._sessions() as s:
            return [(job_from_row(j), placement_from_row(p)) for j, p in await s.execute(q)]

    async def count_by_state(self) -> dict[JobState, int]:
        q = select(JobRow.state, func.count()).group_by(JobRow.state)
        async with self._sessions() as s:
            counts = {JobState(state): n for state, n in await s.execute(q)}
        return {state: counts.get(state, 0) for state in JobState}

    # ---- jobs: state changes ------------------------------------------------------------

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
                    got = await self._preempt(s, victim, now, preempt_reason)
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
                s.add(
                    PlacementRow(
                        job_id=job.id,
                        site=placement.site,
                        pool_id=placement.pool_id,
                        gpu_milli=placement.gpu_milli,
                        price_per_gpu_hour=placement.price_per_gpu_hour,
                        spot=placement.spot,
                        estimated_cost_usd=placement.estimated_cost_usd,
                        estimated_gco2=placement.estimated_gco2,
                        external_id=None,
                        node_indices=list(placement.node_indices),
                        borrowed=placement.borrowed,
                        active=True,
                        created_at=now,
                    )
                )
        except _Abort:
            return None
        return released

    async def _preempt(
        self, s: AsyncSession, job_id: str, at: datetime, reason: str
    ) -> Placement | None:
        """running/scheduled → preempted → pending, giving its GPUs back (caller's txn)."""
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
        if not await self._cas(
            s,
            job_id,
            (JobState.PREEMPTED,),
            JobState.PENDING,
            "requeued",
            at,
            "back in the queue after preemption",
        ):
            return None
        return placement

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

    async def running_work(self) -> list[RunningWork]:
        """Every job holding GPUs, as the engine sees it."""
        q = (
            select(JobRow, PlacementRow, PoolRow.gpu_model)
            .join(PlacementRow, PlacementRow.job_id == JobRow.id)
            .join(PoolRow, PoolRow.id == PlacementRow.pool_id)
            .where(PlacementRow.active.is_(True))
        )
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        out = []
        for job, prow, model in rows:
            p = placement_from_row(prow)
            out.append(
                RunningWork(
                    job_id=job.id,
                    tenant=job.tenant,
                    tier=Tier(job.tier),
                    preemptible=job.preemptible,
                    pool_id=p.pool_id,
                    node_indices=p.node_indices,
                    milli_per_node=p.milli_per_node,
                    gpu_model=model,
                    started_at=p.started_at,
                    placed_at=p.created_at,
                    borrowed=p.borrowed,
                )
            )
        return out

    async def set_external_id(self, job_id: str, external_id: str) -> None:
        async with self._sessions.begin() as s:
            await s.execute(
                update(PlacementRow)
                .where(PlacementRow.job_id == job_id, PlacementRow.active.is_(True))
                .values(external_id=external_id)
            )

    async def mark_running(self, job_id: str, *, at: datetime, detail: str = "") -> bool:
        async with self._sessions() as s, s.begin():
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
    ) -> Released | None:
        """Move a job to a terminal state (or back to pending) and release its allocation."""
        at = at or self._clock.now()
        async with self._sessions() as s, s.begin():
            row = await s.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None:
                raise JobNotFound(job_id)
            src = JobState(row.state)
            if src.terminal:
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

    async def _take(self, s: AsyncSession, placement: Placement) -> bool:
        """Book the placement's share on each of its nodes, or nothing if any lacks room."""
        cap = await s.scalar(select(PoolRow.gpus_per_node).where(PoolRow.id == placement.pool_id))
        if cap is None or not placement.node_indices:
            return False
        per = placement.milli_per_node
        for idx in placement.node_indices:
            res = await s.execute(
                update(PoolNodeRow)
                .where(
                    PoolNodeRow.pool_id == placement.pool_id,
                    PoolNodeRow.idx == idx,
                    PoolNodeRow.allocated_milli + per <= cap * MILLI_PER_GPU,
                )
                .values(allocated_milli=PoolNodeRow.allocated_milli + per)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return False
        return True

    async def _give_back(self, s: AsyncSession, placement: Placement) -> None:
        for idx in placement.node_indices:
            await s.execute(
                update(PoolNodeRow)
                .where(PoolNodeRow.pool_id == placement.pool_id, PoolNodeRow.idx == idx)
                .values(allocated_milli=PoolNodeRow.allocated_milli - placement.milli_per_node)
            )

    async def _cas(
        self,
        s: AsyncSession,
        job_id: str,
        src: Sequence[JobState],
        dst: JobState,
        reason: str,
        at: datetime,
        detail: str = "",
    ) -> bool:
        """Compare-and-set the job's state inside the caller's transaction, with its event."""
        for state in src:
            if state is not dst and dst not in TRANSITIONS[state]:
                raise InvalidTransition(job_id=job_id, src=state.value, dst=dst.value)
        cur = await s.scalar(select(JobRow.state).where(JobRow.id == job_id))
        if cur is None or JobState(cur) not in src:
            return False
        res = await s.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == cur)
            .values(state=dst.value, state_reason=reason, updated_at=at, version=JobRow.version + 1)
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
