"""The hourly intensity the broker has observed, kept so its own forecaster can learn a zone.

Live providers give history only a day back (Electricity Maps) or not at all, and the
broker's forecaster needs weeks. So every carbon refresh takes the hours the chain reports as
observed (neither forecast, estimated nor stale; not the broker's own forecast) into this
store, and the owner persists them (`broker.db.carbon_history`) and loads them again at
start-up. `hourly` answers from memory, as `ForecastingSource`'s history provider must.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from carbon.base import IntensityReading

__all__ = ["RECORDED_KEEP", "Observed", "RecordedHistory", "observed"]

HOUR = timedelta(hours=1)
OWN_FORECAST = "broker-forecast"
RECORDED_KEEP = timedelta(weeks=12)  # the forecaster trains on at most 8 weeks plus lags


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    zone: str
    hour: datetime  # UTC, on the hour
    gco2_per_kwh: float
    source: str


def observed(readings: Iterable[IntensityReading], *, before: datetime) -> list[Observed]:
    """The readings worth learning from: measured hours that ended by `before`."""
    out = []
    for r in readings:
        hour = r.at.replace(minute=0, second=0, microsecond=0)
        if r.forecast or r.estimated or r.stale or r.source == OWN_FORECAST:
            continue
        if hour + HOUR > before:
            continue
        out.append(Observed(zone=r.zone, hour=hour, gco2_per_kwh=r.gco2_per_kwh, source=r.source))
    return out


class RecordedHistory:
    """Observed hours per zone, sorted, at most `keep` back from the newest of each zone."""

    def __init__(self, *, keep: timedelta = RECORDED_KEEP) -> None:
        self._keep = keep
        self._hours: dict[str, list[datetime]] = {}
        self._values: dict[str, list[float]] = {}

    def add(self, items: Iterable[Observed]) -> int:
        """Take observations in (a later value for a known hour replaces it); how many."""
        count = 0
        for o in items:
            hours = self._hours.setdefault(o.zone, [])
            values = self._values.setdefault(o.zone, [])
            i = bisect.bisect_left(hours, o.hour)
            if i < len(hours) and hours[i] == o.hour:
                values[i] = o.gco2_per_kwh
            else:
                hours.insert(i, o.hour)
                values.insert(i, o.gco2_per_kwh)
            count += 1
        for zone, hours in self._hours.items():
            drop = bisect.bisect_left(hours, hours[-1] - self._keep) if hours else 0
            if drop:
                del hours[:drop]
                del self._values[zone][:drop]
        return count

    def hours(self, zone: str) -> int:
        return len(self._hours.get(zone, ()))

    def hourly(
        self, zone: str, *, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, float]]:
        """(hour, gCO2e/kWh) of the observed hours in [start, end), oldest first."""
        hours = self._hours.get(zone)
        if not hours:
            return []
        lo, hi = bisect.bisect_left(hours, start), bisect.bisect_left(hours, end)
        return list(zip(hours[lo:hi], self._values[zone][lo:hi], strict=True))
