"""Burst capacity: the record of every burst and reclaim, and the instances bursts started.

Written by `broker.burst.burster`, read by it (what is alive, what failed lately, what was
spent today) and by the API and reports. An action is inserted before its provider call, so
a crash between the two leaves a `requested` action the next pass resumes with the same
request id instead of a launch nobody knows of.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from broker.db.models import BurstInstanceRow, CapacityActionRow, PlacementRow
from broker.db.store_base import StoreBase
from broker.domain.capacity import (
    ActionKind,
    ActionState,
    BurstInstance,
    CapacityAction,
    CapacityTotals,
    totals,
)

InstanceKey = tuple[str, str]  # (provider site, instance id)


def _action(row: CapacityActionRow) -> CapacityAction:
    return CapacityAction(
        id=row.id,
        kind=ActionKind(row.kind),
        provider_site=row.provider_site,
        joins_site=row.joins_site,
        gpu_model=row.gpu_model,
        count=row.count,
        spot=row.spot,
        reason=row.reason,
        requested_at=row.requested_at,
        usd_per_hour=row.usd_per_hour,
        gco2e_per_hour=row.gco2e_per_hour,
        state=ActionState(row.state),
        instance_ids=tuple(row.instance_ids or ()),
        for_jobs=tuple(row.for_jobs or ()),
        tenants={str(k): float(v) for k, v in (row.tenants or {}).items()},
        ready_at=row.ready_at,
        released_at=row.released_at,
        cost_usd=row.cost_usd,
        gco2e=row.gco2e,
        detail=row.detail,
    )


def _instance(row: BurstInstanceRow) -> BurstInstance:
    return BurstInstance(
        provider_site=row.provider_site,
        instance_id=row.instance_id,
        action_id=row.action_id,
        gpu_model=row.gpu_model,
        gpus=row.gpus,
        zone=row.zone,
        spot=row.spot,
        usd_per_hour=row.usd_per_hour,
        gco2e_per_hour=row.gco2e_per_hour,
        launched_at=row.launched_at,
        provider_id=row.provider_id,
        node=row.node,
        joined_at=row.joined_at,
        idle_since=row.idle_since,
        released_at=row.released_at,
        release_reason=row.release_reason,
        reclaim_id=row.reclaim_id,
    )


def _action_values(a: CapacityAction) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind.value,
        "provider_site": a.provider_site,
        "joins_site": a.joins_site,
        "gpu_model": a.gpu_model,
        "count": a.count,
        "spot": a.spot,
        "instance_ids": list(a.instance_ids),
        "reason": a.reason,
        "for_jobs": list(a.for_jobs),
        "tenants": dict(a.tenants),
        "requested_at": a.requested_at,
        "ready_at": a.ready_at,
        "released_at": a.released_at,
        "usd_per_hour": a.usd_per_hour,
        "gco2e_per_hour": a.gco2e_per_hour,
        "cost_usd": a.cost_usd,
        "gco2e": a.gco2e,
        "state": a.state.value,
        "detail": a.detail,
    }


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)


class CapacityStore(StoreBase):
    async def record_action(self, action: CapacityAction) -> None:
        async with self._sessions.begin() as s:
            s.add(CapacityActionRow(**_action_values(action)))

    async def action(self, action_id: str) -> CapacityAction | None:
        async with self._sessions() as s:
            row = await s.get(CapacityActionRow, action_id)
            return None if row is None else _action(row)

    async def add_instances(self, action_id: str, instances: Sequence[BurstInstance]) -> None:
        """Record the instances a burst's provider call returned (again, on a retry)."""
        async with self._sessions.begin() as s:
            row = await s.get(CapacityActionRow, action_id, with_for_update=True)
            if row is None:
                raise KeyError(f"no capacity action {action_id}")
            for inst in instances:
                key = (inst.provider_site, inst.instance_id)
                if await s.get(BurstInstanceRow, key) is None:
                    s.add(BurstInstanceRow(**_instance_values(inst)))
            ids = list(
                dict.fromkeys([*(row.instance_ids or []), *(i.instance_id for i in instances)])
            )
            row.instance_ids, row.count = ids, len(ids)  # what the provider started

    async def mark_ready(self, action_id: str, *, at: datetime) -> bool:
        """requested → ready; False when it was not waiting to be."""
        async with self._sessions.begin() as s:
            done = await s.execute(
                update(CapacityActionRow)
                .where(
                    CapacityActionRow.id == action_id,
                    CapacityActionRow.state == ActionState.REQUESTED.value,
                )
                .values(state=ActionState.READY.value, ready_at=at)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    async def mark_failed(self, action_id: str, *, at: datetime, detail: str) -> None:
        """An open burst ends as failed; instances it still has are released separately."""
        async with self._sessions.begin() as s:
            await s.execute(
                update(CapacityActionRow)
                .where(
                    CapacityActionRow.id == action_id,
                    CapacityActionRow.state.in_(
                        [ActionState.REQUESTED.value, ActionState.READY.value]
                    ),
                )
                .values(state=ActionState.FAILED.value, released_at=at, detail=detail)
            )

    async def mark_joined(self, joined: Mapping[InstanceKey, str], *, at: datetime) -> None:
        """Instances whose node showed up in their cluster, with the node's name."""
        async with self._sessions.begin() as s:
            for (site, instance_id), node in sorted(joined.items()):
                await s.execute(
                    update(BurstInstanceRow)
                    .where(
                        BurstInstanceRow.provider_site == site,
                        BurstInstanceRow.instance_id == instance_id,
                        BurstInstanceRow.joined_at.is_(None),
                    )
                    .values(node=node, joined_at=at, idle_since=at)
                )

    async def set_idle_since(self, changes: Mapping[InstanceKey, datetime | None]) -> None:
        """Start (a time) or stop (None) the idle clock of instances."""
        async with self._sessions.begin() as s:
            for (site, instance_id), since in sorted(changes.items()):
                await s.execute(
                    update(BurstInstanceRow)
                    .where(
                        BurstInstanceRow.provider_site == site,
                        BurstInstanceRow.instance_id == instance_id,
                    )
                    .values(idle_since=since)
                )

    async def release(
        self, reclaim: CapacityAction, *, instances: Sequence[BurstInstance], at: datetime
    ) -> None:
        """Record a reclaim and the release of its instances; a burst whose last instance
        goes is marked released (or stays failed) with what its instances cost in all."""
        async with self._sessions.begin() as s:
            s.add(CapacityActionRow(**_action_values(reclaim)))
            await s.flush()
            touched: set[str] = set()
            for inst in instances:
                row = await s.get(
                    BurstInstanceRow, (inst.provider_site, inst.instance_id), with_for_update=True
                )
                if row is None or row.released_at is not None:
                    continue
                row.released_at, row.release_reason = at, inst.release_reason or reclaim.reason
                row.reclaim_id = reclaim.id
                touched.add(row.action_id)
            await s.flush()
            for action_id in sorted(touched):
                rows = list(
                    await s.scalars(
                        select(BurstInstanceRow).where(BurstInstanceRow.action_id == action_id)
                    )
                )
                if any(r.released_at is None for r in rows):
                    continue
                done = [_instance(r) for r in rows]
                values: dict[str, Any] = {
                    "cost_usd": sum(i.cost_usd(until=at) for i in done),
                    "gco2e": _sum_or_none(i.gco2e(until=at) for i in done),
                    "released_at": at,
                }
                await s.execute(
                    update(CapacityActionRow)
                    .where(CapacityActionRow.id == action_id)
                    .values(**values)
                )
                await s.execute(
                    update(CapacityActionRow)
                    .where(
                        CapacityActionRow.id == action_id,
                        CapacityActionRow.state != ActionState.FAILED.value,
                    )
                    .values(state=ActionState.RELEASED.value)
                )

    async def actions_by_id(self, ids: Iterable[str]) -> list[CapacityAction]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        q = select(CapacityActionRow).where(CapacityActionRow.id.in_(wanted))
        async with self._sessions() as s:
            return [_action(r) for r in await s.scalars(q)]

    async def open_actions(self) -> list[CapacityAction]:
        """Bursts requested or ready, oldest first."""
        q = (
            select(CapacityActionRow)
            .where(
                CapacityActionRow.state.in_([ActionState.REQUESTED.value, ActionState.READY.value])
            )
            .order_by(CapacityActionRow.requested_at, CapacityActionRow.id)
        )
        async with self._sessions() as s:
            return [_action(r) for r in await s.scalars(q)]

    async def failures_since(self, since: datetime) -> list[CapacityAction]:
        q = (
            select(CapacityActionRow)
            .where(
                CapacityActionRow.state == ActionState.FAILED.value,
                CapacityActionRow.kind == ActionKind.BURST.value,
                CapacityActionRow.requested_at >= since,
            )
            .order_by(CapacityActionRow.requested_at, CapacityActionRow.id)
        )
        async with self._sessions() as s:
            return [_action(r) for r in await s.scalars(q)]

    async def actions(
        self, *, start: datetime, end: datetime, kind: ActionKind | None = None
    ) -> list[CapacityAction]:
        """Actions requested in [start, end), oldest first."""
        q = select(CapacityActionRow).where(
            CapacityActionRow.requested_at >= start, CapacityActionRow.requested_at < end
        )
        if kind is not None:
            q = q.where(CapacityActionRow.kind == kind.value)
        q = q.order_by(CapacityActionRow.requested_at, CapacityActionRow.id)
        async with self._sessions() as s:
            return [_action(r) for r in await s.scalars(q)]

    async def alive_instances(self) -> list[BurstInstance]:
        q = (
            select(BurstInstanceRow)
            .where(BurstInstanceRow.released_at.is_(None))
            .order_by(BurstInstanceRow.provider_site, BurstInstanceRow.instance_id)
        )
        async with self._sessions() as s:
            return [_instance(r) for r in await s.scalars(q)]

    async def instances_between(self, *, start: datetime, end: datetime) -> list[BurstInstance]:
        """Instances that ran at some time in [start, end)."""
        q = (
            select(BurstInstanceRow)
            .where(
                BurstInstanceRow.launched_at < end,
                (BurstInstanceRow.released_at.is_(None)) | (BurstInstanceRow.released_at > start),
            )
            .order_by(BurstInstanceRow.provider_site, BurstInstanceRow.instance_id)
        )
        async with self._sessions() as s:
            return [_instance(r) for r in await s.scalars(q)]

    async def period_totals(
        self, *, start: datetime, end: datetime, now: datetime
    ) -> CapacityTotals:
        """Bursts and reclaims asked for in [start, end), and what instances cost in it up to
        `now` (a period not over yet is counted to now)."""
        until = max(start, min(end, now))
        return totals(
            actions=await self.actions(start=start, end=end),
            instances=await self.instances_between(start=start, end=until),
            start=start,
            end=until,
        )

    async def ended_work(
        self, pool_ids: Iterable[str], *, since: datetime
    ) -> list[tuple[str, datetime, datetime]]:
        """(pool id, placed at, ended at) of the placements on the pools that ended after
        `since`: an instance's idle clock starts at the end of the last work that may have
        run on it, even when no pass saw that work running."""
        wanted = sorted(set(pool_ids))
        if not wanted:
            return []
        q = select(PlacementRow.pool_id, PlacementRow.created_at, PlacementRow.ended_at).where(
            PlacementRow.pool_id.in_(wanted),
            PlacementRow.active.is_(False),
            PlacementRow.ended_at >= since,
        )
        async with self._sessions() as s:
            return [(p, c, e) for p, c, e in await s.execute(q) if e is not None]

    async def released_since(self, since: datetime) -> list[BurstInstance]:
        q = select(BurstInstanceRow).where(BurstInstanceRow.released_at >= since)
        async with self._sessions() as s:
            return [_instance(r) for r in await s.scalars(q)]


def _instance_values(inst: BurstInstance) -> dict[str, Any]:
    return {
        "provider_site": inst.provider_site,
        "instance_id": inst.instance_id,
        "action_id": inst.action_id,
        "gpu_model": inst.gpu_model,
        "gpus": inst.gpus,
        "zone": inst.zone,
        "spot": inst.spot,
        "usd_per_hour": inst.usd_per_hour,
        "gco2e_per_hour": inst.gco2e_per_hour,
        "launched_at": inst.launched_at,
        "provider_id": inst.provider_id,
        "node": inst.node,
        "joined_at": inst.joined_at,
        "idle_since": inst.idle_since,
        "released_at": inst.released_at,
        "release_reason": inst.release_reason,
        "reclaim_id": inst.reclaim_id,
    }


def released(inst: BurstInstance, *, at: datetime, reason: str) -> BurstInstance:
    """The instance as released at `at`, for a reclaim's record."""
    return replace(inst, released_at=at, release_reason=reason)
