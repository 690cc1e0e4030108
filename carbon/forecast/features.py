"""Features of one (forecast origin, horizon) pair, computed from the past only.

Positions index one hourly array (``history.Hourly``). The *origin* ``o`` is the position
of the last hour whose value is known when the forecast is made; the *target* is
``t = o + h`` for a horizon of ``h`` hours (1 = the hour right after the last known one).
Every value a feature reads sits at a position ``<= o``:

* ``last`` = ``v[o]``; the model's target is ``v[t] - last``, and every lag feature is taken
  relative to ``last`` too. So the model learns *changes* from the current level, not
  levels: a tree or linear model trained on one year then still applies when the level
  moves (Brazil's 2022 mean was 46 % below 2021's after the drought year), instead of
  pulling every forecast back to last year's values.
* ``day``: the same hour of day on the latest day already known, ``v[t - 24 ceil(h/24)]``
  (the target's own "24 h before" for h <= 24, 48 h before for 25..48);
* ``week``: the same hour a week before the target, ``v[t - 168]`` (known while h <= 168);
* ``mean24``/``mean168``: means of the 24 and 168 hours ending at ``o``;
* ``d1..d3``: the three hours before ``o``, for the short-term slope.

Calendar features describe the *target* hour: 1..K daily harmonics of the UTC hour of day,
the weekly harmonic and a weekend flag. They are in UTC, so a zone's daylight-saving shift
moves its daily shape by an hour for half the year; the lags carry that shift anyway.
A forecast therefore needs ``MIN_HISTORY_H`` = 168 known hours before it can be made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["FEATURE_VERSION", "MIN_HISTORY_H", "FeatureSpec", "design", "target_positions"]

FEATURE_VERSION = 1  # bump when columns change: saved models with another version are refused
MIN_HISTORY_H = 168
_WEEK_H = 168
_DAY_H = 24
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureSpec:
    """Which features a model was trained on; saved with it, checked when it is loaded."""

    version: int = FEATURE_VERSION
    max_horizon_h: int = 48
    daily_harmonics: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.max_horizon_h <= _WEEK_H:
            raise ValueError(f"max_horizon_h must be 1..{_WEEK_H}, got {self.max_horizon_h}")
        if self.daily_harmonics < 1:
            raise ValueError(f"daily_harmonics must be >= 1, got {self.daily_harmonics}")

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of ``design``'s matrix, in order."""
        daily = tuple(
            f"hod_{fn}{k}" for k in range(1, self.daily_harmonics + 1) for fn in ("sin", "cos")
        )
        return (
            *daily,
            "dow_sin",
            "dow_cos",
            "weekend",
            "horizon",
            "day_rel",
            "week_rel",
            "mean24_rel",
            "mean168_rel",
            "d1_rel",
            "d2_rel",
            "d3_rel",
        )


def target_positions(origins: IntArray, horizons: IntArray) -> IntArray:
    """Target position of each (origin, horizon) row."""
    return np.asarray(origins, dtype=np.int64) + np.asarray(horizons, dtype=np.int64)


def _check(values: FloatArray, origins: IntArray, horizons: IntArray, spec: FeatureSpec) -> None:
    if origins.shape != horizons.shape or origins.ndim != 1:
        raise ValueError("origins and horizons must be 1-D arrays of one length")
    if origins.size == 0:
        return
    if origins.min() < MIN_HISTORY_H - 1 or origins.max() >= values.size:
        raise ValueError(
            f"origins must be in [{MIN_HISTORY_H - 1}, {values.size}): "
            f"a forecast needs {MIN_HISTORY_H} known hours"
        )
    if horizons.min() < 1 or horizons.max() > spec.max_horizon_h:
        raise ValueError(f"horizons must be in 1..{spec.max_horizon_h}")


def _trailing_mean(values: FloatArray, origins: IntArray, hours: int) -> FloatArray:
    """Mean of the `hours` values ending at each origin.

    Each window is summed on its own, not as a difference of running sums, so the result
    does not depend on how much older history the array holds: a forecast from a one-week
    history equals, to the bit, the one from a year.
    """
    unique, inverse = np.unique(origins, return_inverse=True)
    windows = np.lib.stride_tricks.sliding_window_view(values, hours)
    means: FloatArray = windows[unique - (hours - 1)].mean(axis=1)
    return means[inverse]


def design(
    values: FloatArray,
    *,
    first_index: int,
    origins: IntArray,
    horizons: IntArray,
    spec: FeatureSpec,
) -> tuple[FloatArray, FloatArray]:
    """Feature matrix (rows x ``spec.names``) and each row's base level ``v[origin]``.

    `first_index` is the ``hour_index`` of ``values[0]``, for the calendar features. The
    model predicts ``v[target] - base``; add the base back to get intensities.
    """
    origins = np.asarray(origins, dtype=np.int64)
    horizons = np.asarray(horizons, dtype=np.int64)
    _check(values, origins, horizons, spec)
    targets = origins + horizons
    last = values[origins]
    mean24 = _trailing_mean(values, origins, _DAY_H)
    mean168 = _trailing_mean(values, origins, _WEEK_H)
    days_back = (horizons + _DAY_H - 1) // _DAY_H
    day = values[targets - _DAY_H * days_back]
    week = values[targets - _WEEK_H]

    absolute = first_index + targets
    hod = 2.0 * np.pi * (absolute % _DAY_H) / _DAY_H
    weekday = (absolute // _DAY_H + _EPOCH_WEEKDAY) % 7
    dow = 2.0 * np.pi * weekday / 7.0
    daily = [fn(k * hod) for k in range(1, spec.daily_harmonics + 1) for fn in (np.sin, np.cos)]
    columns = [
        *daily,
        np.sin(dow),
        np.cos(dow),
        (weekday >= 5).astype(np.float64),
        horizons.astype(np.float64),
        day - last,
        week - last,
        mean24 - last,
        mean168 - last,
        values[origins - 1] - last,
        values[origins - 2] - last,
        values[origins - 3] - last,
    ]
    return np.column_stack(columns).astype(np.float64, copy=False), last.astype(np.float64)
