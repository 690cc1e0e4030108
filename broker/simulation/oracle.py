"""The simulator's carbon oracle: replayed hourly series where a zone has one, else the
static annual table, answered on demand for any window (a replay may run far past the
trace's last submission while queues drain)."""

from __future__ import annotations

from datetime import datetime, timedelta

from broker.domain.engine import Hourly
from carbon.replay import ReplaySource
from carbon.static import StaticTableSource


class ReplayOracle:
    def __init__(self, *, replay: ReplaySource | None, static: StaticTableSource) -> None:
        self._replay = replay
        self._static = static
        self._cache: dict[tuple[str, datetime, datetime], Hourly] = {}

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        key = (zone, start, end)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows: Hourly = []
        if self._replay is not None and self._replay.series_for(zone) is not None:
            rows = self._replay.hourly(zone, start=start, end=end)
        else:
            entry = self._static.entry(zone)
            if entry is not None:
                hour = start.replace(minute=0, second=0, microsecond=0)
                out = []
                while hour < end:
                    out.append((hour, entry.gco2_per_kwh))
                    hour += timedelta(hours=1)
                rows = out
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = rows
        return rows

    def zones_with_series(self) -> frozenset[str]:
        return self._replay.regions if self._replay is not None else frozenset()
