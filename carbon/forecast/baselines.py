"""The forecaster interface, and the naive baselines every model must be compared with.

A forecaster maps known history to the next hours. All of them, the trained model
included, answer the same vectorised question: for each origin position ``o`` (the last
known hour), the values of hours ``o+1 .. o+hours``, as one row of a matrix. That is what
lets the evaluation score a year of hourly origins with one call per method.

Baselines (standard in carbon-intensity forecasting, e.g. Maji et al., e-Energy '22):

* persistence: the last known value held flat, ``v[o]``;
* seasonal-naive with period ``p`` (24 h or 168 h): the value one period before the target
  hour, or several periods back when the horizon exceeds the period,
  ``v[t - p ceil(h/p)]``, so it never reads an hour after ``o``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from carbon.forecast.history import Hourly

__all__ = ["Forecaster", "Persistence", "SeasonalNaive", "forecast_at"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class Forecaster(Protocol):
    """Anything that forecasts hourly intensity from the hours before an origin."""

    @property
    def name(self) -> str:
        """Short label for reports."""
        ...

    @property
    def min_history_h(self) -> int:
        """Known hours needed before the first forecast."""
        ...

    def predict_positions(self, history: Hourly, *, origins: IntArray, hours: int) -> FloatArray:
        """Matrix (origins x hours): column j is horizon j + 1 from each origin position."""
        ...


def _grid(origins: IntArray, hours: int) -> tuple[IntArray, IntArray]:
    origins = np.asarray(origins, dtype=np.int64)
    horizons = np.arange(1, hours + 1, dtype=np.int64)
    return origins[:, None], horizons[None, :]


def _check_origins(history: Hourly, origins: IntArray, *, need: int) -> None:
    if origins.size and (origins.min() < need - 1 or origins.max() >= len(history)):
        raise ValueError(f"origins must be in [{need - 1}, {len(history)}): {need} known hours")


@dataclass(frozen=True, slots=True)
class Persistence:
    """The last known value, held for every horizon."""

    name: str = "persistence"
    min_history_h: int = 1

    def predict_positions(self, history: Hourly, *, origins: IntArray, hours: int) -> FloatArray:
        """Each origin's own value repeated `hours` times."""
        origins = np.asarray(origins, dtype=np.int64)
        _check_origins(history, origins, need=1)
        return np.repeat(history.values[origins][:, None], hours, axis=1)


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """The value one period (or the fewest whole periods) before each target hour."""

    period_h: int

    @property
    def name(self) -> str:
        return f"seasonal-{self.period_h}h"

    @property
    def min_history_h(self) -> int:
        return self.period_h

    def predict_positions(self, history: Hourly, *, origins: IntArray, hours: int) -> FloatArray:
        """``v[t - p ceil(h/p)]`` for every origin and horizon 1..hours."""
        origins = np.asarray(origins, dtype=np.int64)
        _check_origins(history, origins, need=self.period_h)
        o, h = _grid(origins, hours)
        periods_back = (h + self.period_h - 1) // self.period_h
        out: FloatArray = history.values[o + h - self.period_h * periods_back]
        return out


def forecast_at(
    forecaster: Forecaster, history: Hourly, *, origin: datetime, hours: int
) -> list[tuple[datetime, float]]:
    """(hour start, value) for the `hours` hours after the last hour known at `origin`.

    Known hours are those that ended by `origin` (``history.before(origin)``); anything the
    history holds after that is ignored, so a caller cannot leak the future by passing a
    longer series. The first forecast hour is the one containing `origin` when `origin`
    is inside an hour, and the hour starting at `origin` when it is on the hour.
    """
    known = history.before(origin)
    if len(known) < forecaster.min_history_h:
        raise ValueError(
            f"{forecaster.name} needs {forecaster.min_history_h} known hours before "
            f"{origin.isoformat()}, history has {len(known)}"
        )
    position = len(known) - 1
    row = forecaster.predict_positions(
        known, origins=np.array([position], dtype=np.int64), hours=hours
    )[0]
    return [(known.hour_at(position + 1 + j), float(row[j])) for j in range(hours)]
