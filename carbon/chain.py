"""A per-zone fallback chain of carbon sources: the first that knows a zone answers.

An outage or an unknown zone in one source never stops scheduling: e.g. replayed or live
hourly data first, then the static annual table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from carbon.base import CarbonSource, IntensityReading


class FallbackSource:
    def __init__(self, sources: Sequence[CarbonSource]) -> None:
        if not sources:
            raise ValueError("a fallback chain needs at least one source")
        self._sources = tuple(sources)
        self.name = "+".join(s.name for s in self._sources)

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        for source in self._sources:
            reading = await source.current(zone, at=at)
            if reading is not None:
                return reading
        return None

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        for source in self._sources:
            readings = await source.forecast(zone, start=start, end=end)
            if readings:
                return readings
        return []
