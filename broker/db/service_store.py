"""The service side of the store: services, their autoscaler decisions, load and signals.

A service's replicas are jobs (`jobs.service_id`), so they are placed, followed and
accounted by the job paths; this part keeps what only services have. Writes that change a
service compare-and-set on its state, so a change racing a delete loses cleanly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from broker.db.codec import job_from_row, placement_from_row
from broker.db.models import (
    JobRow,
    PlacementRow,
    ServiceDecisionRow,
    ServiceLoadRow,
    ServiceRow,
    ServiceSignalRow,
    SiteStartupRow,
)
from broker.db.store_base import StoreBase
from broker.domain.enums import JobState
from broker.domain.errors import IdempotencyConflict, ServiceDeleted, ServiceNotFound
from broker.domain.jobs import Job, Placement
from broker.domain.serde import service_spec_from_dict, service_spec_to_dict
from broker.domain.services import Service, ServiceSpec, ServiceState

KEEP_DECISIONS = 20  # per service, the newest
_ENDED = [s.value for s in JobState if s.terminal]


@dataclass(frozen=True, slots=True)
class Decision:
    at: datetime
    desired: int
    ready: int
    load: float | None
    mode: str
    reason: str


@dataclass(frozen=True, slots=True)
class Signal:
    id: int
    start: datetime
    until: datetime
    replicas: int
    note: str


class ServiceStore(StoreBase):
    async def create_service(
        self,
        *,
        tenant: str,
        spec: ServiceSpec,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> tuple[Service, bool]:
        """Insert an active service; with a known key, the earlier one (created=False)."""
        if idempotency_key is not None:
            earlier = await self._service_by_key(tenant, idempotency_key, request_hash)
            if earlier is not None:
                return earlier, False
        now = self._clock.now()
        row = ServiceRow(
            id=f"svc-{uuid.uuid4().hex[:20]}",
            tenant=tenant,
            name=spec.name,
            spec=service_spec_to_dict(spec),
            state=ServiceState.ACTIVE.value,
            generation=1,
            desired=spec.min_replicas,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._sessions.begin() as s:
                s.add(row)
        except IntegrityError:  # the same key raced us
            if idempotency_key is None:
                raise
            earlier = await self._service_by_key(tenant, idempotency_key, request_hash)
            if earlier is None:
                raise
            return earlier, False
        return _service(row), True

    async def _service_by_key(
        self, tenant: str, key: str, request_hash: str | None
    ) -> Service | None:
        async with self._sessions() as s:
            row = await s.scalar(
                select(ServiceRow).where(
                    ServiceRow.tenant == tenant, ServiceRow.idempotency_key == key
                )
            )
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise IdempotencyConflict(key=key, job_id=row.id)
        return _service(row)

    async def get_service(self, service_id: str, *, tenant: str | None = None) -> Service:
        """The service (only a tenant's own when `tenant` is given); deleted ones are gone."""
        async with self._sessions() as s:
            row = await s.get(ServiceRow, service_id)
        if row is None or row.state == ServiceState.DELETED.value:
            raise ServiceNotFound(service_id)
        if tenant is not None and row.tenant != tenant:
            raise ServiceNotFound(service_id)
        return _service(row)

    async def list_services(self, *, tenant: str | None = None) -> list[Service]:
        q = select(ServiceRow).where(ServiceRow.state != ServiceState.DELETED.value)
        if tenant is not None:
            q = q.where(ServiceRow.tenant == tenant)
        async with self._sessions() as s:
            return [_service(r) for r in await s.scalars(q.order_by(ServiceRow.created_at))]

    async def update_service(
        self, service_id: str, *, tenant: str | None, spec: ServiceSpec
    ) -> Service:
        """Replace the spec; a change of what replicas run starts a new generation."""
        current = await self.get_service(service_id, tenant=tenant)
        if current.state is not ServiceState.ACTIVE:
            raise ServiceDeleted(service_id)
        generation = current.generation + (not current.spec.same_replicas(spec))
        async with self._sessions.begin() as s:
            res = await s.execute(
                update(ServiceRow)
                .where(
                    ServiceRow.id == service_id,
                    ServiceRow.state == ServiceState.ACTIVE.value,
                    ServiceRow.generation == current.generation,
                )
                .values(
                    spec=service_spec_to_dict(spec),
                    name=spec.name,
                    generation=generation,
                    updated_at=self._clock.now(),
                )
            )
        if res.rowcount != 1:  # type: ignore[attr-defined]
            return await self.update_service(service_id, tenant=tenant, spec=spec)
        return await self.get_service(service_id)

    async def delete_service(self, service_id: str, *, tenant: str | None) -> Service:
        """Start draining: no new replicas; the controller stops the rest, then removes it."""
        current = await self.get_service(service_id, tenant=tenant)
        if current.state is ServiceState.ACTIVE:
            await self._set_state(service_id, ServiceState.DELETING, only=ServiceState.ACTIVE)
        return await self.get_service(service_id)

    async def finish_delete(self, service_id: str) -> bool:
        """Drained: the service is gone (kept as a row for its replicas' accounting)."""
        return await self._set_state(service_id, ServiceState.DELETED, only=ServiceState.DELETING)

    async def _set_state(self, service_id: str, state: ServiceState, *, only: ServiceState) -> bool:
        async with self._sessions.begin() as s:
            res = await s.execute(
                update(ServiceRow)
                .where(ServiceRow.id == service_id, ServiceRow.state == only.value)
                .values(state=state.value, updated_at=self._clock.now())
            )
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    async def live_services(self) -> list[Service]:
        """Every service the controller still acts on (active or draining)."""
        return await self.list_services()

    async def replicas(self, service_id: str) -> list[tuple[Job, Placement | None]]:
        """The service's replicas that have not ended, each with its active placement."""
        q = (
            select(JobRow, PlacementRow)
            .outerjoin(
                PlacementRow,
                (PlacementRow.job_id == JobRow.id) & PlacementRow.active.is_(True),
            )
            .where(JobRow.service_id == service_id, JobRow.state.not_in(_ENDED))
            .order_by(JobRow.seq)
        )
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        return [(job_from_row(j), None if p is None else placement_from_row(p)) for j, p in rows]

    async def record_decision(self, service_id: str, decision: Decision) -> None:
        """Keep the decision (and the newest `KEEP_DECISIONS`) and the desired count."""
        async with self._sessions.begin() as s:
            s.add(
                ServiceDecisionRow(
                    service_id=service_id,
                    at=decision.at,
                    desired=decision.desired,
                    ready=decision.ready,
                    load=decision.load,
                    mode=decision.mode,
                    reason=decision.reason,
                )
            )
            await s.execute(
                update(ServiceRow)
                .where(ServiceRow.id == service_id)
                .values(desired=decision.desired)
            )
            await s.flush()
            keep = (
                select(ServiceDecisionRow.id)
                .where(ServiceDecisionRow.service_id == service_id)
                .order_by(ServiceDecisionRow.id.desc())
                .limit(KEEP_DECISIONS)
            )
            kept = list(await s.scalars(keep))
            await s.execute(
                delete(ServiceDecisionRow).where(
                    ServiceDecisionRow.service_id == service_id,
                    ServiceDecisionRow.id.not_in(kept),
                )
            )

    async def decisions(self, service_id: str, *, limit: int = 10) -> list[Decision]:
        """The newest decisions first."""
        q = (
            select(ServiceDecisionRow)
            .where(ServiceDecisionRow.service_id == service_id)
            .order_by(ServiceDecisionRow.id.desc())
            .limit(limit)
        )
        async with self._sessions() as s:
            rows = list(await s.scalars(q))
        return [
            Decision(
                at=r.at, desired=r.desired, ready=r.ready, load=r.load, mode=r.mode, reason=r.reason
            )
            for r in rows
        ]

    async def record_load(self, service_id: str, *, at: datetime, value: float) -> None:
        async with self._sessions.begin() as s:
            await s.merge(ServiceLoadRow(service_id=service_id, at=at, value=value))

    async def load_since(self, service_id: str, since: datetime) -> list[tuple[datetime, float]]:
        q = (
            select(ServiceLoadRow.at, ServiceLoadRow.value)
            .where(ServiceLoadRow.service_id == service_id, ServiceLoadRow.at >= since)
            .order_by(ServiceLoadRow.at)
        )
        async with self._sessions() as s:
            return [(at, value) for at, value in await s.execute(q)]

    async def set_load(self, service_id: str, *, at: datetime, value: float) -> None:
        """The load observed now (the API's current figure; history is `record_load`)."""
        async with self._sessions.begin() as s:
            await s.execute(
                update(ServiceRow).where(ServiceRow.id == service_id).values(load=value, load_at=at)
            )

    async def latest_load(self, service_id: str) -> tuple[datetime, float] | None:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(ServiceRow.load_at, ServiceRow.load).where(ServiceRow.id == service_id)
                )
            ).first()
        if row is None or row.load_at is None or row.load is None:
            return None
        return (row.load_at, row.load)

    async def forget_load(self, before: datetime) -> int:
        """Drop load samples older than `before` (the history's retention)."""
        async with self._sessions.begin() as s:
            res = await s.execute(delete(ServiceLoadRow).where(ServiceLoadRow.at < before))
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    async def startup_times(self) -> dict[str, float]:
        """Seconds a replica took to serve at each site, as last remembered."""
        async with self._sessions() as s:
            rows = await s.execute(select(SiteStartupRow.site, SiteStartupRow.seconds))
            return {site: seconds for site, seconds in rows}

    async def remember_startup(self, site: str, *, seconds: float) -> None:
        async with self._sessions.begin() as s:
            await s.merge(SiteStartupRow(site=site, seconds=seconds, updated_at=self._clock.now()))

    async def add_signal(
        self, service_id: str, *, start: datetime, until: datetime, replicas: int, note: str
    ) -> Signal:
        async with self._sessions.begin() as s:
            row = ServiceSignalRow(
                service_id=service_id,
                start=start,
                until=until,
                replicas=replicas,
                note=note,
                created_at=self._clock.now(),
            )
            s.add(row)
            await s.flush()
            return _signal(row)

    async def signals(self, service_id: str, *, now: datetime) -> list[Signal]:
        """Signals that have not ended, soonest first."""
        q = (
            select(ServiceSignalRow)
            .where(ServiceSignalRow.service_id == service_id, ServiceSignalRow.until > now)
            .order_by(ServiceSignalRow.start)
        )
        async with self._sessions() as s:
            return [_signal(r) for r in await s.scalars(q)]


def _signal(row: ServiceSignalRow) -> Signal:
    return Signal(id=row.id, start=row.start, until=row.until, replicas=row.replicas, note=row.note)


def _service(row: ServiceRow) -> Service:
    return Service(
        id=row.id,
        tenant=row.tenant,
        spec=service_spec_from_dict(row.spec),
        state=ServiceState(row.state),
        generation=row.generation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        desired=row.desired,
    )
