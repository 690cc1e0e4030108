"""The hourly series the forecasters read: a start hour and a gap-free numpy array.

Every forecaster in this package works on integer hour positions in one array, so "the
past" is a slice and features are index arithmetic (see ``features``). This module turns
the shapes history arrives in into that form:

* a ``carbon.replay.HourlySeries`` (or anything with ``first_hour`` and ``values``);
* (hour start, value) points from a history provider, which may have gaps: a missing hour
  carries the previous value forward, as ``carbon.replay`` does, so a short outage of the
  live feed does not stop forecasting; hours are floored to the UTC hour and the last point
  of an hour wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["HOUR", "Hourly", "SeriesLike", "as_utc", "floor_hour", "hour_index"]

HOUR = timedelta(hours=1)
_HOUR_S = 3600

FloatArray = NDArray[np.float64]


class SeriesLike(Protocol):
    """What ``carbon.replay.HourlySeries`` offers: a first hour and one value per hour."""

    @property
    def first_hour(self) -> datetime: ...

    @property
    def values(self) -> Sequence[float]: ...


def as_utc(moment: datetime, *, name: str) -> datetime:
    """The same instant in UTC; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    """Start of the UTC hour containing `moment` (which must be aware)."""
    return as_utc(moment, name="moment").replace(minute=0, second=0, microsecond=0)


def hour_index(moment: datetime) -> int:
    """Whole hours since the Unix epoch of an hour start: the calendar features' time axis."""
    return math.floor(as_utc(moment, name="moment").timestamp()) // _HOUR_S


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Hourly:
    """Gap-free hourly intensity: ``values[i]`` is the hour starting ``first_hour + i h``."""

    first_hour: datetime
    values: FloatArray

    def __post_init__(self) -> None:
        first = as_utc(self.first_hour, name="first_hour")
        if first != first.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"first_hour must be on a whole UTC hour, got {first.isoformat()}")
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
        if values.size and not np.all(np.isfinite(values)):
            raise ValueError("values must be finite")
        # Frozen dataclass: normalise through object.__setattr__, once, at construction.
        object.__setattr__(self, "first_hour", first)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def end(self) -> datetime:
        """The instant just after the last hour."""
        return self.first_hour + len(self) * HOUR

    @property
    def first_index(self) -> int:
        """``hour_index`` of the first hour."""
        return hour_index(self.first_hour)

    def position(self, hour: datetime) -> int:
        """Array position of the hour containing `hour` (may be outside the series)."""
        return (floor_hour(hour) - self.first_hour) // HOUR

    def hour_at(self, position: int) -> datetime:
        """Start of the hour at an array position."""
        return self.first_hour + position * HOUR

    def before(self, end: datetime) -> Hourly:
        """The hours that ended by `end` (start + 1 h <= end): what is known at `end`."""
        stop = (as_utc(end, name="end") - self.first_hour) // HOUR
        stop = max(0, min(len(self), stop))
        return Hourly(first_hour=self.first_hour, values=self.values[:stop])

    def last(self, hours: int) -> Hourly:
        """The final `hours` hours (all of them if the series is shorter)."""
        start = max(0, len(self) - hours)
        return Hourly(first_hour=self.hour_at(start), values=self.values[start:])

    @classmethod
    def from_series(cls, series: SeriesLike) -> Hourly:
        """Copy of a replay series (or anything shaped like one)."""
        return cls(first_hour=series.first_hour, values=np.array(series.values, dtype=np.float64))

    @classmethod
    def from_points(cls, points: Iterable[tuple[datetime, float]]) -> Hourly | None:
        """Series spanning the points' hours, gaps carried forward; None when there are none."""
        by_hour: dict[int, float] = {}
        for moment, value in points:
            by_hour[hour_index(floor_hour(moment))] = float(value)
        if not by_hour:
            return None
        first, last = min(by_hour), max(by_hour)
        values = np.empty(last - first + 1, dtype=np.float64)
        previous = by_hour[first]
        for offset in range(values.size):
            previous = by_hour.get(first + offset, previous)
            values[offset] = previous
        return cls(first_hour=datetime.fromtimestamp(first * _HOUR_S, tz=UTC), values=values)
