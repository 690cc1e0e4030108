"""Observed hourly grid intensity: written by the carbon refresh, read back at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from broker.db.models import CarbonReadingRow
from broker.db.store_base import StoreBase
from carbon.recorded import Observed


class CarbonHistoryStore(StoreBase):
    async def save_readings(self, readings: Sequence[Observed]) -> None:
        """Upsert: a later observation of the same zone and hour replaces the earlier one."""
        if not readings:
            return
        async with self._sessions.begin() as s:
            insert = (
                postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
            )
            stmt = insert(CarbonReadingRow).values(
                [
                    {
                        "zone": r.zone,
                        "hour": r.hour,
                        "gco2_per_kwh": r.gco2_per_kwh,
                        "source": r.source,
                    }
                    for r in readings
                ]
            )
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["zone", "hour"],
                    set_={
                        "gco2_per_kwh": stmt.excluded.gco2_per_kwh,
                        "source": stmt.excluded.source,
                    },
                )
            )

    async def readings_since(self, since: datetime) -> list[Observed]:
        q = (
            select(CarbonReadingRow)
            .where(CarbonReadingRow.hour >= since)
            .order_by(CarbonReadingRow.zone, CarbonReadingRow.hour)
        )
        async with self._sessions() as s:
            return [
                Observed(zone=r.zone, hour=r.hour, gco2_per_kwh=r.gco2_per_kwh, source=r.source)
                for r in await s.scalars(q)
            ]
