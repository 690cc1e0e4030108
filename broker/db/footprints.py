"""Run footprints: written once when a run ends, read by the sustainability reports."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime

from sqlalchemy import insert, select

from broker.db.models import FootprintRow
from broker.db.store_base import StoreBase
from broker.domain.enums import Tier
from broker.domain.footprint import RunFootprint

_FIELDS = [f.name for f in fields(RunFootprint)]


class FootprintStore(StoreBase):
    async def record_footprint(self, run: RunFootprint) -> None:
        values = asdict(run) | {"tier": run.tier.value, "recorded_at": self._clock.now()}
        async with self._sessions.begin() as s:
            await s.execute(insert(FootprintRow).values(**values))

    async def footprints(self, *, start: datetime, end: datetime) -> list[RunFootprint]:
        """Runs that ended in [start, end), oldest first."""
        q = (
            select(FootprintRow)
            .where(FootprintRow.ended_at >= start, FootprintRow.ended_at < end)
            .order_by(FootprintRow.ended_at, FootprintRow.id)
        )
        async with self._sessions() as s:
            rows = await s.scalars(q)
            return [
                RunFootprint(**{k: getattr(r, k) for k in _FIELDS} | {"tier": Tier(r.tier)})
                for r in rows
            ]
