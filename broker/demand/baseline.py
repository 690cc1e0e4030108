"""Naive forecasts with error bands: the fallback for short histories and the backtest's yardstick.

The point forecast repeats a past hour: the same hour on the most recent known day
(`DAY`), the same hour a week before (`WEEK`), or the last known hour (`LAST`). A quantile
other than the median adds the spread of that rule's own past errors: for each lag `L`,
the errors `y[s] − y[s − L]` over the last two weeks before the origin, taken relative to
their median, so the p50 stays the naive value itself and the p90 sits as far above it as
the rule's 90th-percentile error did. With too little history for a single error the band
is zero wide, and with less than the lag the last known value (or zero) stands in.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np

from broker.demand.features import WEEK, day_lag
from broker.demand.history import FloatArray

ERROR_WINDOW = 14 * 24  # hours of past errors that set a naive rule's band


class Naive(enum.StrEnum):
    DAY = "naive_day"  # same hour, most recent known day
    WEEK = "naive_week"  # same hour, one week before
    LAST = "last_value"  # last known hour, flat


def lag_of(kind: Naive, horizon: int) -> int:
    """How many hours back the value repeated for `horizon` lies."""
    if kind is Naive.DAY:
        return int(day_lag(np.array([horizon], dtype=np.int64))[0])
    return WEEK if kind is Naive.WEEK else horizon


def naive_quantiles(
    history: FloatArray,
    *,
    hours: int,
    quantiles: Sequence[float],
    kind: Naive = Naive.DAY,
    error_window: int = ERROR_WINDOW,
) -> FloatArray:
    """Shape (hours, len(quantiles)): each horizon's quantiles, non-crossing and ≥ 0.

    `history` is every known hour up to the origin; row `h − 1` is horizon `h`.
    """
    o = history.size
    qs = np.asarray(quantiles, dtype=np.float64)
    out = np.zeros((hours, qs.size))
    bands: dict[int, FloatArray] = {}
    for h in range(1, hours + 1):
        lag = lag_of(kind, h)
        source = o + h - 1 - lag
        fallback = history[-1] if o else 0.0  # less history than the lag
        point = history[source] if source >= 0 else fallback
        if lag not in bands:
            bands[lag] = _band(history, lag=lag, quantiles=qs, window=error_window)
        out[h - 1] = point + bands[lag]
    return np.maximum(np.sort(out, axis=1), 0.0)


def _band(history: FloatArray, *, lag: int, quantiles: FloatArray, window: int) -> FloatArray:
    """The rule's past errors at `quantiles`, relative to their median (zeros if none)."""
    o = history.size
    lo = max(lag, o - window)
    if lo >= o:
        return np.zeros(quantiles.size)
    errors = history[lo:o] - history[lo - lag : o - lag]
    return np.quantile(errors, quantiles) - np.quantile(errors, 0.5)
