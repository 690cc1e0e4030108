"""Provider points and their hourly means: the small pure core shared by the live sources.

Providers publish at their own cadence (Electricity Maps hourly, the GB API half-hourly,
WattTime every 5 minutes); the broker plans on the UTC hour. An hour's value is the plain
mean of the points that start inside it, which is the time-weighted mean for evenly spaced
points. Flags are pessimistic: an hour is a forecast, or estimated, if any of its points is.
Points with a missing, negative or non-finite value are dropped before averaging, so no
reading ever carries NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "HOUR",
    "Point",
    "Series",
    "as_utc",
    "floor_hour",
    "hourly_means",
    "parse_time",
    "usable",
]

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One provider value (gCO2e/kWh) for the period starting at `at` (UTC)."""

    at: datetime
    value: float
    forecast: bool
    estimated: bool = False


Series = tuple[Point, ...]


def as_utc(moment: datetime, *, name: str) -> datetime:
    """The same instant in UTC; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def parse_time(text: object) -> datetime | None:
    """A provider timestamp ("2024-03-05T20:00:00.000Z", "2021-12-13T16:30Z") in UTC, or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def usable(value: object) -> float | None:
    """The value as a float if it is a finite, non-negative number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0.0 else None


def hourly_means(points: Iterable[Point]) -> Series:
    """One point per UTC hour holding the mean of that hour's points, in hour order."""
    buckets: dict[datetime, list[Point]] = {}
    for point in points:
        if usable(point.value) is None:
            continue
        buckets.setdefault(floor_hour(point.at), []).append(point)
    return tuple(
        Point(
            at=hour,
            value=math.fsum(p.value for p in group) / len(group),
            forecast=any(p.forecast for p in group),
            estimated=any(p.estimated for p in group),
        )
        for hour, group in sorted(buckets.items())
    )
