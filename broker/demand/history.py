"""Hourly GPU demand per (GPU model, tier), built from job records.

Two series per key, one value per hour `[h, h + 1 h)`:

* **GPU-hours requested**, by submit hour: `gpus × estimated duration` of every job
  submitted in that hour. What was asked for, whether or not it ran.
* **Peak concurrent GPUs**: the most GPUs held at any instant of the hour, from each job's
  interval `[start, end)`. This is what a fleet must have on hand, so it is what the burst
  planner compares with private capacity. A job that has not started yet is counted over
  `[submit, submit + estimated duration)`, as if it ran when asked (the demand it
  represents, not what the fleet served); one cancelled before it started stops at its end.
  A job still running at the table's end counts until that end (at least), whatever its
  estimate said: at that moment it is known to hold its GPUs.

An hour with no job is a zero, never a missing row, so lag features and forecasts never
have to guess what a gap means. The table's end is "now": the builder takes it as an input
and never reads the clock. The peak is computed with one sorted sweep over start/end
events (releases before acquisitions at the same instant, since intervals are half-open),
so a million records take a second, not a loop per hour.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from broker.domain.enums import Tier

ANY_MODEL = "any"  # a job that accepts every model and has not run yet
ALL = "all"  # the label of a key that sums over models or tiers
HOUR = timedelta(hours=1)
_HOUR_S = 3600.0

FloatArray = npt.NDArray[np.float64]


class Metric(enum.StrEnum):
    GPU_HOURS = "gpu_hours"  # requested, by submit hour
    PEAK_GPUS = "peak_gpus"  # peak concurrent GPUs in the hour


class Grouping(enum.StrEnum):
    """Which records share a series: per model and tier, per model, or all together."""

    MODEL_TIER = "model_tier"
    MODEL = "model"
    TOTAL = "total"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandRecord:
    """One job as the forecaster sees it; `gpu_model` is where it ran, or its first choice."""

    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    estimated_duration_s: float
    gpus: float  # whole job (all nodes); a fraction for a shared GPU
    gpu_model: str
    tier: Tier

    def __post_init__(self) -> None:
        for name in ("submitted_at", "started_at", "ended_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        if not self.gpus > 0:
            raise ValueError(f"gpus must be > 0, got {self.gpus}")
        if not self.estimated_duration_s > 0:
            raise ValueError(f"estimated_duration_s must be > 0, got {self.estimated_duration_s}")
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A series' identity; `tier` None (and `gpu_model` ALL) when the grouping sums over it."""

    gpu_model: str
    tier: Tier | None

    @property
    def label(self) -> str:
        return f"{self.gpu_model}/{self.tier.value if self.tier else ALL}"

    def sort_key(self) -> tuple[str, str]:
        return (self.gpu_model, self.tier.value if self.tier else "")


def key_of(record: DemandRecord, grouping: Grouping) -> SeriesKey:
    """The series a record belongs to under `grouping`."""
    if grouping is Grouping.MODEL_TIER:
        return SeriesKey(record.gpu_model, record.tier)
    if grouping is Grouping.MODEL:
        return SeriesKey(record.gpu_model, None)
    return SeriesKey(ALL, None)


def floor_hour(at: datetime) -> datetime:
    """The start of the hour `at` falls in (UTC)."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _check_hour(at: datetime, name: str) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    if floor_hour(at) != at:
        raise ValueError(f"{name} must be on the hour, got {at.isoformat()}")
    return at.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandTable:
    """Hourly series from `start` for `hours` hours; every array has length `hours`."""

    start: datetime
    hours: int
    gpu_hours: Mapping[SeriesKey, FloatArray]
    peak_gpus: Mapping[SeriesKey, FloatArray]

    @property
    def end(self) -> datetime:
        return self.start + self.hours * HOUR

    @property
    def keys(self) -> tuple[SeriesKey, ...]:
        return tuple(sorted(self.peak_gpus, key=SeriesKey.sort_key))

    def series(self, key: SeriesKey, metric: Metric) -> FloatArray:
        """One series (read-only); a key the table lacks is all zeros."""
        values = (self.gpu_hours if metric is Metric.GPU_HOURS else self.peak_gpus).get(key)
        return values if values is not None else _frozen(np.zeros(self.hours))

    def index(self, at: datetime) -> int:
        """The position of the hour starting at `at` (may be outside the table)."""
        offset = _check_hour(at, "at") - self.start
        return int(offset.total_seconds() // _HOUR_S)

    def until(self, end: datetime) -> DemandTable:
        """The table as known at `end`: the hours before it (`end` within the table)."""
        n = self.index(end)
        if not 0 <= n <= self.hours:
            raise ValueError(f"{end.isoformat()} is outside the table")
        return DemandTable(
            start=self.start,
            hours=n,
            gpu_hours={k: v[:n] for k, v in self.gpu_hours.items()},
            peak_gpus={k: v[:n] for k, v in self.peak_gpus.items()},
        )


def _frozen(values: FloatArray) -> FloatArray:
    values.flags.writeable = False
    return values


def _interval(record: DemandRecord, *, end_s: float, t0: datetime) -> tuple[float, float]:
    """The record's [start, end) in seconds from `t0`, by the rules of the module docstring."""
    est = record.estimated_duration_s
    if record.started_at is None:
        lo = (record.submitted_at - t0).total_seconds()
        hi = lo + est
        if record.ended_at is not None:  # gave up before it ran
            hi = min(hi, (record.ended_at - t0).total_seconds())
        return lo, hi
    lo = (record.started_at - t0).total_seconds()
    if record.ended_at is not None:
        return lo, (record.ended_at - t0).total_seconds()
    return lo, max(lo + est, end_s)


def peak_concurrency(
    starts: FloatArray, ends: FloatArray, gpus: FloatArray, *, hours: int
) -> FloatArray:
    """Peak of the summed `gpus` over each hour, intervals in seconds from the first hour."""
    if starts.size == 0 or hours == 0:
        return np.zeros(hours)
    times = np.concatenate([starts, ends])
    deltas = np.concatenate([gpus, -gpus])
    order = np.lexsort((deltas, times))  # by time, releases (negative) first
    times, levels = times[order], np.cumsum(deltas[order])
    bounds = np.arange(hours) * _HOUR_S
    before = np.searchsorted(times, bounds, side="right") - 1  # level as each hour opens
    peak = np.where(before >= 0, levels[np.maximum(before, 0)], 0.0)
    inside = (times >= 0) & (times < hours * _HOUR_S)
    np.maximum.at(peak, (times[inside] // _HOUR_S).astype(np.int64), levels[inside])
    return np.maximum(np.round(peak, 9), 0.0)  # float sums of fractions may leave -1e-16


def build_table(
    records: Iterable[DemandRecord],
    *,
    start: datetime,
    end: datetime,
    grouping: Grouping = Grouping.MODEL_TIER,
    keys: Iterable[SeriesKey] = (),
) -> DemandTable:
    """Hourly demand over `[start, end)`; `keys` adds series that must exist even if empty."""
    start, end = _check_hour(start, "start"), _check_hour(end, "end")
    if end < start:
        raise ValueError("end is before start")
    hours = int((end - start).total_seconds() // _HOUR_S)
    end_s = hours * _HOUR_S
    rows: dict[SeriesKey, list[tuple[float, float, float, float, float]]] = defaultdict(list)
    for key in keys:
        rows[key] = []
    for r in records:
        begin, finish = _interval(r, end_s=end_s, t0=start)
        asked_s = (r.submitted_at - start).total_seconds()
        rows[key_of(r, grouping)].append((asked_s, begin, finish, r.gpus, r.estimated_duration_s))
    gpu_hours: dict[SeriesKey, FloatArray] = {}
    peak: dict[SeriesKey, FloatArray] = {}
    for key, items in rows.items():
        data = np.asarray(items, dtype=np.float64).reshape(-1, 5)
        submit_s, lo, hi, gpus, est_s = (data[:, i] for i in range(5))
        asked = (submit_s >= 0) & (submit_s < end_s)
        hourly = np.bincount(
            (submit_s[asked] // _HOUR_S).astype(np.int64),
            weights=gpus[asked] * est_s[asked] / _HOUR_S,
            minlength=hours,
        )
        gpu_hours[key] = _frozen(hourly.astype(np.float64))
        ran = hi > lo
        peak[key] = _frozen(peak_concurrency(lo[ran], hi[ran], gpus[ran], hours=hours))
    return DemandTable(start=start, hours=hours, gpu_hours=gpu_hours, peak_gpus=peak)
