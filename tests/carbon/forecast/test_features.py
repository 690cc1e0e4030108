"""Features read only the past: hand-computed lags, calendar columns, and a tamper test.

The tamper tests change every value after an origin and require the same features and the
same forecasts; a feature that read the target hour (or any hour after the origin) fails.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from carbon.forecast import (
    MIN_HISTORY_H,
    FeatureSpec,
    Hourly,
    Persistence,
    SeasonalNaive,
    train_zone,
)
from carbon.forecast.features import design
from carbon.forecast.history import hour_index
from tests.carbon.forecast.conftest import T0, synthetic

SPEC = FeatureSpec()
H = np.arange(1, SPEC.max_horizon_h + 1)


def _features(values: np.ndarray, origin: int) -> np.ndarray:
    x, base = design(
        values,
        first_index=hour_index(T0),
        origins=np.full(H.size, origin),
        horizons=H,
        spec=SPEC,
    )
    return np.column_stack([x, base])


@pytest.mark.parametrize("origin", [MIN_HISTORY_H - 1, 300, 500])
def test_features_unchanged_when_the_future_changes(origin: int) -> None:
    values = synthetic(30).values
    tampered = values.copy()
    tampered[origin + 1 :] = tampered[origin + 1 :] * 7.0 + 1000.0
    np.testing.assert_array_equal(_features(values, origin), _features(tampered, origin))


def test_features_change_when_the_origin_hour_changes() -> None:
    # The converse: the tamper test above is not vacuous, the origin hour itself is read.
    values = synthetic(30).values
    tampered = values.copy()
    tampered[400] += 50.0
    assert not np.array_equal(_features(values, 400), _features(tampered, 400))


def test_forecasts_unchanged_when_the_future_changes() -> None:
    series = synthetic(42)
    model = train_zone(series, now=series.hour_at(28 * 24), zone="ZZ")
    origins = np.array([28 * 24 - 1, 30 * 24 + 5, 35 * 24 + 11])
    for forecaster in (model, Persistence(), SeasonalNaive(24), SeasonalNaive(168)):
        for origin in origins:
            values = series.values.copy()
            values[origin + 1 :] = 3.0 * values[origin + 1 :] + 999.0
            tampered = Hourly(first_hour=series.first_hour, values=values)
            one = np.array([origin])
            clean = forecaster.predict_positions(series, origins=one, hours=48)
            moved = forecaster.predict_positions(tampered, origins=one, hours=48)
            np.testing.assert_array_equal(clean, moved, err_msg=f"{forecaster.name} @ {origin}")


def test_lags_are_hand_computable_on_a_ramp() -> None:
    # v[i] = i, so every lag is a known position; relative lags are position - origin.
    values = np.arange(400, dtype=np.float64)
    origin = 200
    x, base = design(
        values,
        first_index=hour_index(T0),
        origins=np.array([origin, origin, origin]),
        horizons=np.array([1, 24, 25]),
        spec=SPEC,
    )
    col = {name: x[:, i] for i, name in enumerate(SPEC.names)}
    np.testing.assert_array_equal(base, [200, 200, 200])
    np.testing.assert_array_equal(col["horizon"], [1, 24, 25])
    # same hour on the latest known day: t-24 for h=1 (177), t-24 for h=24 (200), t-48 for 25
    np.testing.assert_array_equal(col["day_rel"], [177 - 200, 200 - 200, 177 - 200])
    np.testing.assert_array_equal(col["week_rel"], [201 - 168 - 200, 224 - 168 - 200, -143])
    np.testing.assert_allclose(col["mean24_rel"], np.mean(np.arange(177, 201)) - 200)
    np.testing.assert_allclose(col["mean168_rel"], np.mean(np.arange(33, 201)) - 200)
    np.testing.assert_array_equal(col["d1_rel"], [-1, -1, -1])
    np.testing.assert_array_equal(col["d3_rel"], [-3, -3, -3])


def test_calendar_features_describe_the_target_hour() -> None:
    values = np.ones(24 * 14)
    origin = 24 * 8 - 1  # Monday 2021-03-08 23:00 is the last known hour
    # h=7: Tuesday 06:00; h=4*24+13: Saturday 12:00
    week = FeatureSpec(max_horizon_h=168)
    x, _ = design(
        values,
        first_index=hour_index(T0),
        origins=np.array([origin, origin]),
        horizons=np.array([7, 4 * 24 + 13]),
        spec=week,
    )
    col = {name: x[:, i] for i, name in enumerate(week.names)}
    np.testing.assert_allclose(col["hod_sin1"], [1.0, 0.0], atol=1e-12)  # 06:00, 12:00
    np.testing.assert_allclose(col["hod_cos1"], [0.0, -1.0], atol=1e-12)
    tuesday, saturday = 2 * np.pi * 1 / 7, 2 * np.pi * 5 / 7
    np.testing.assert_allclose(col["dow_sin"], [np.sin(tuesday), np.sin(saturday)])
    np.testing.assert_array_equal(col["weekend"], [0.0, 1.0])
    assert (T0 + timedelta(hours=origin + 4 * 24 + 13)).strftime("%a %H") == "Sat 12"


def test_too_little_history_is_refused() -> None:
    values = np.ones(400)
    with pytest.raises(ValueError, match="known hours"):
        design(
            values,
            first_index=0,
            origins=np.array([MIN_HISTORY_H - 2]),
            horizons=np.array([1]),
            spec=SPEC,
        )
    with pytest.raises(ValueError, match="horizons"):
        design(values, first_index=0, origins=np.array([200]), horizons=np.array([49]), spec=SPEC)
