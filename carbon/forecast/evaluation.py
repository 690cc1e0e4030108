"""Scoring forecasts: point errors, and how much of the time-shifting saving they capture.

Point errors (MAE, MAPE) say how close a forecast is; what the broker needs is narrower: do
the forecasts pick *good hours* to run deferrable work in. ``shift_jobs`` answers that for
a batch of jobs, each submitted with a slack of ``S`` hours and running for ``D`` hours at
constant power:

* every start ``k = 0..S`` hours after submission is a candidate; its cost is the sum of
  intensities over the ``D`` hours it would run;
* the forecast's choice is the start with the least *forecast* cost (the earliest on ties,
  so a flat forecast runs the job at once); it is then charged its *actual* cost;
* run-now (``k = 0``) and the oracle (least actual cost) bound it.

``captured_saving`` = ``sum(run_now - chosen) / sum(run_now - oracle)`` in percent, summed
over jobs before dividing (a per-job ratio is undefined when run-now is already optimal).
100 % is perfect foresight, 0 % no better than not waiting; it is negative when the
forecast's choices are worse than running at once. Intensities stand in for emissions
because power is constant: the ratio does not depend on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ShiftOutcome", "captured_saving", "mae", "mape", "shift_jobs", "window_costs"]

FloatArray = NDArray[np.float64]


def mae(forecast: ArrayLike, actual: ArrayLike) -> float:
    """Mean absolute error."""
    f, a = np.asarray(forecast, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(f - a)))


def mape(forecast: ArrayLike, actual: ArrayLike) -> float:
    """Mean absolute percentage error, in percent of the actual value (which must be > 0)."""
    f, a = np.asarray(forecast, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if np.any(a <= 0):
        raise ValueError("MAPE needs strictly positive actual values")
    return float(100.0 * np.mean(np.abs(f - a) / a))


def window_costs(values: ArrayLike, duration: int) -> FloatArray:
    """Rows x starts: the sum of each row's `duration` consecutive values from each start."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or not 1 <= duration <= v.shape[1]:
        raise ValueError(f"need a 2-D array at least {duration} columns wide, got {v.shape}")
    # Each window summed on its own (not as a difference of prefix sums), so equal values
    # give bit-equal costs and a flat forecast really ties (and then runs the job at once).
    windows = np.lib.stride_tricks.sliding_window_view(v, duration, axis=1)
    return np.asarray(windows.sum(axis=2), dtype=np.float64)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ShiftOutcome:
    """Actual cost (intensity x hours) of each job for the three ways of starting it."""

    run_now: FloatArray
    chosen: FloatArray
    oracle: FloatArray
    start: NDArray[np.int64]  # hours after submission the forecast chose


def shift_jobs(*, actual: ArrayLike, forecast: ArrayLike, duration: int) -> ShiftOutcome:
    """Choose each job's start from `forecast`, charge it `actual`.

    Both arrays are jobs x (slack + duration): the hours from submission to the latest
    possible end, actual values and the forecasts issued at submission.
    """
    a, f = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    if a.shape != f.shape:
        raise ValueError(f"actual {a.shape} and forecast {f.shape} differ in shape")
    actual_cost = window_costs(a, duration)
    forecast_cost = window_costs(f, duration)
    start = np.argmin(forecast_cost, axis=1)  # first minimum: the earliest start on ties
    rows = np.arange(a.shape[0])
    return ShiftOutcome(
        run_now=actual_cost[:, 0],
        chosen=actual_cost[rows, start],
        oracle=actual_cost.min(axis=1),
        start=start.astype(np.int64),
    )


def captured_saving(outcome: ShiftOutcome) -> float:
    """Percent of the oracle's saving over run-now that the chosen starts achieved (NaN if 0)."""
    possible = float(np.sum(outcome.run_now - outcome.oracle))
    if possible <= 0.0:
        return math.nan
    return 100.0 * float(np.sum(outcome.run_now - outcome.chosen)) / possible
