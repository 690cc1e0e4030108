"""Carbon and latency inputs for the engine: the async carbon source read once per pass.

The engine is pure and synchronous, so before a pass the loop reads each grid zone's
hourly series for the planning horizon from the (async, possibly remote) carbon source
into an `HourlyTable`, which the engine then queries as its `CarbonOracle`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from broker.domain.engine import Hourly
from carbon.base import CarbonSource


class HourlyTable:
    """Hourly intensity per zone for one planning horizon; implements `CarbonOracle`."""

    def __init__(self, series: Mapping[str, Hourly]) -> None:
        self._series = {zone: sorted(rows) for zone, rows in series.items()}

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        rows = self._series.get(zone, ())
        lo = start.replace(minute=0, second=0, microsecond=0)
        return [(t, v) for t, v in rows if lo <= t < end]

    def current(self, zone: str, *, at: datetime) -> float | None:
        hour = at.replace(minute=0, second=0, microsecond=0)
        for t, v in self._series.get(zone, ()):
            if t == hour:
                return v
        return None


async def read_hourly(
    source: CarbonSource, zones: Iterable[str], *, start: datetime, hours: int
) -> HourlyTable:
    """Each zone's readings for [start, start + hours), forecast where the source has one."""
    end = start + timedelta(hours=hours)
    series: dict[str, Hourly] = {}
    for zone in sorted(set(zones)):
        readings = await source.forecast(zone, start=start, end=end)
        series[zone] = [(r.at, r.gco2_per_kwh) for r in readings]
    return HourlyTable(series)
