"""Persistence and seasonal-naive against values worked out by hand, and ``forecast_at``."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from carbon.forecast import Hourly, Persistence, SeasonalNaive, forecast_at
from tests.carbon.forecast.conftest import T0

H = timedelta(hours=1)


def _series(values: list[float]) -> Hourly:
    return Hourly(first_hour=T0, values=np.array(values, dtype=np.float64))


def test_persistence_holds_the_last_known_value() -> None:
    series = _series([10, 20, 30, 40, 50])
    out = Persistence().predict_positions(series, origins=np.array([2, 4]), hours=3)
    np.testing.assert_array_equal(out, [[30, 30, 30], [50, 50, 50]])


def test_seasonal_naive_repeats_one_period_back_and_wraps_beyond_it() -> None:
    # Period 3 on v = 100 + position: target t = o + h reads t - 3 ceil(h/3).
    series = _series([100 + i for i in range(10)])
    out = SeasonalNaive(3).predict_positions(series, origins=np.array([5]), hours=7)
    # h=1..3 -> t-3 = 3,4,5; h=4..6 -> t-6 = 3,4,5; h=7 -> t-9 = 3
    np.testing.assert_array_equal(out, [[103, 104, 105, 103, 104, 105, 103]])


def test_seasonal_naive_daily_and_weekly() -> None:
    values = np.arange(400, dtype=np.float64)
    series = Hourly(first_hour=T0, values=values)
    daily = SeasonalNaive(24).predict_positions(series, origins=np.array([300]), hours=48)[0]
    weekly = SeasonalNaive(168).predict_positions(series, origins=np.array([300]), hours=48)[0]
    assert daily[0] == 277 and daily[23] == 300 and daily[24] == 277 and daily[47] == 300
    assert weekly[0] == 133 and weekly[47] == 180


def test_baselines_refuse_origins_without_enough_history() -> None:
    series = _series([1.0] * 30)
    with pytest.raises(ValueError, match="known hours"):
        SeasonalNaive(24).predict_positions(series, origins=np.array([22]), hours=1)
    with pytest.raises(ValueError, match="known hours"):
        Persistence().predict_positions(series, origins=np.array([30]), hours=1)


def test_forecast_at_starts_after_the_last_ended_hour() -> None:
    series = _series([float(i) for i in range(48)])
    # At 10:30 the 09:00 hour is the last one that ended: forecasts start at 10:00.
    points = forecast_at(Persistence(), series, origin=T0 + 10.5 * H, hours=3)
    assert points == [(T0 + 10 * H, 9.0), (T0 + 11 * H, 9.0), (T0 + 12 * H, 9.0)]
    # On the hour, the hour starting at the origin is the first forecast.
    points = forecast_at(SeasonalNaive(24), series, origin=T0 + 30 * H, hours=2)
    assert points == [(T0 + 30 * H, 6.0), (T0 + 31 * H, 7.0)]
    assert all(moment.utcoffset() == timedelta(0) for moment, _ in points)


def test_forecast_at_needs_enough_known_hours() -> None:
    series = _series([1.0] * 48)
    with pytest.raises(ValueError, match="needs 24 known hours"):
        forecast_at(SeasonalNaive(24), series, origin=T0 + 23 * H, hours=1)
