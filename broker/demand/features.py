"""Features of a target hour, computed only from the hours before the forecast origin.

A forecast made at origin `o` (an hour index; the hours `0 … o − 1` are known) for horizon
`h ≥ 1` targets hour `t = o + h − 1`. Every feature reads `y[:o]` and nothing later (the
tests change later hours and expect the same forecast):

* calendar of the target: hour of day, day of week; and the horizon `h` itself, so one
  model serves every horizon (the "direct" multi-horizon strategy, no recursion);
* `lag_day`: the same hour on the most recent day fully known at `o`, i.e.
  `t − 24·⌈h/24⌉` (yesterday for `h ≤ 24`, the day before for `h ≤ 48`);
* `same_hour_7d`: the mean of that hour over the seven known days ending there;
* `lag_week`: `t − 168` (known for every `h ≤ 168`);
* `last`, `mean_24`, `max_24`: the last known hour, and the mean and peak of the last day;
* `vol_1h`, `vol_24h`: how much the series moved hour to hour and day to day over the last
  week (root mean square of the changes), which sets how wide the p90 must be;
* `log_scale`: the size of the series (`log(1 + scale)`).

The model predicts the **change from the last known hour**, not the level, and the level
features are given as differences from it: peak concurrency persists (jobs run for hours),
so "no change" is a strong forecast, and trees learn departures from it far better than
they rebuild a level from scratch. Changes and levels are divided by `scale` = max(peak
of the last week, 1 GPU): the peak rather than the mean, because a series that has just
started (a new GPU model, a quiet week ending) has a tiny mean: dividing by it made its
first busy day a jump of many scales, and the pooled model then predicted such jumps
elsewhere (a p90 of 31 GPUs, in the retrain test, for a series that never exceeds 12).

One model is trained on every series at once: an H100 pool of 600 GPUs and an L4 pool of
20 share the shape of their week (the daily swing, how fast a level decays) though not
their size, and pooling gives the small series more examples.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt

from broker.demand.history import FloatArray

DAY = 24
WEEK = 168
MIN_ORIGIN = WEEK  # an origin needs a full week behind it for `lag_week`
MAX_HORIZON = WEEK
FEATURES: tuple[str, ...] = (
    "hour",
    "weekday",
    "horizon",
    "log_scale",
    "last",
    "mean_24",
    "max_24",
    "lag_day",
    "same_hour_7d",
    "lag_week",
    "vol_1h",
    "vol_24h",
)

IntArray = npt.NDArray[np.int64]


def day_lag(horizons: IntArray) -> IntArray:
    """How far back the same hour of the most recent known day lies, per horizon."""
    return DAY * ((horizons + DAY - 1) // DAY)


def calendar(start: datetime, targets: IntArray) -> tuple[IntArray, IntArray]:
    """Hour of day and day of week (Monday 0) of hours `targets` counted from `start`."""
    hours = start.hour + targets
    return hours % DAY, (start.weekday() + hours // DAY) % 7


def features(
    y: FloatArray, *, start: datetime, origins: IntArray, horizons: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One feature row per (origin, horizon) pair, and each row's scale and base.

    `y` may extend past an origin (training reads every origin from one array); only
    `y[:origin]` is read for a row. Needs `origin ≥ MIN_ORIGIN` and `1 ≤ h ≤ MAX_HORIZON`.
    """
    if origins.size and (origins.min() < MIN_ORIGIN or origins.max() > y.size):
        raise ValueError(f"origins must lie in [{MIN_ORIGIN}, {y.size}]")
    if horizons.size and (horizons.min() < 1 or horizons.max() > MAX_HORIZON):
        raise ValueError(f"horizons must lie in [1, {MAX_HORIZON}]")
    csum = np.concatenate([[0.0], np.cumsum(y)])
    targets = origins + horizons - 1
    lag = day_lag(horizons)
    rolling_max = np.lib.stride_tricks.sliding_window_view(y, DAY).max(axis=1)
    max_24 = rolling_max[origins - DAY]
    max_168 = np.max([rolling_max[origins - DAY * k] for k in range(1, 8)], axis=0)
    scale = np.maximum(max_168, 1.0)
    same_hour = np.mean([y[targets - lag - DAY * k] for k in range(7)], axis=0)
    hour, weekday = calendar(start, targets)
    last = y[origins - 1]
    vol_1h = _rms_change(y, origins=origins, lag=1, span=WEEK - 1)
    vol_24h = _rms_change(y, origins=origins, lag=DAY, span=WEEK - DAY)
    columns = (
        hour,
        weekday,
        horizons,
        np.log1p(max_168),
        y[origins - 1] / scale,
        ((csum[origins] - csum[origins - DAY]) / DAY - last) / scale,
        (max_24 - last) / scale,
        (y[targets - lag] - last) / scale,
        (same_hour - last) / scale,
        (y[targets - WEEK] - last) / scale,
        vol_1h / scale,
        vol_24h / scale,
    )
    return np.column_stack(columns).astype(np.float64), scale, y[origins - 1]


def _rms_change(y: FloatArray, *, origins: IntArray, lag: int, span: int) -> FloatArray:
    """Root mean square of `y[s] − y[s − lag]` over the `span` hours before each origin."""
    change = np.zeros(y.size)
    change[lag:] = y[lag:] - y[:-lag]
    squares = np.concatenate([[0.0], np.cumsum(change * change)])
    mean_square: FloatArray = np.maximum(squares[origins] - squares[origins - span], 0.0) / span
    return np.sqrt(mean_square)


def training_pairs(*, known: int, first_origin: int, horizon: int) -> tuple[IntArray, IntArray]:
    """Every (origin, horizon) pair with origin ≥ `first_origin` and target in `[0, known)`."""
    origins = np.arange(max(first_origin, MIN_ORIGIN), known, dtype=np.int64)
    if origins.size == 0:
        return origins, origins
    o = np.repeat(origins, horizon)
    h = np.tile(np.arange(1, horizon + 1, dtype=np.int64), origins.size)
    keep = o + h - 1 < known
    return o[keep], h[keep]
