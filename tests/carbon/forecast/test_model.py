"""The trained model: it learns a daily cycle, trains only on the past, saves and reloads."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import joblib
import numpy as np
import pytest

from carbon.forecast import (
    MIN_HISTORY_H,
    MIN_TRAIN_H,
    Hourly,
    IncompatibleModel,
    InsufficientHistory,
    Persistence,
    SeasonalNaive,
    ZoneForecaster,
    load_model,
    save_model,
    train_zone,
)
from tests.carbon.forecast.conftest import NOISE, T0, daily_cycle, synthetic

H = timedelta(hours=1)
CUT = 35 * 24  # train on five weeks, test on the sixth


def _test_grid(series: Hourly) -> tuple[np.ndarray, np.ndarray]:
    origins = np.arange(CUT - 1, len(series) - 48 - 1)
    return origins, origins[:, None] + np.arange(1, 49)[None, :]


def test_beats_persistence_and_recovers_the_daily_cycle(six_weeks: Hourly) -> None:
    model = train_zone(six_weeks, now=six_weeks.hour_at(CUT), zone="ZZ")
    origins, targets = _test_grid(six_weeks)
    ours = model.predict_positions(six_weeks, origins=origins, hours=48)
    flat = Persistence().predict_positions(six_weeks, origins=origins, hours=48)
    daily = SeasonalNaive(24).predict_positions(six_weeks, origins=origins, hours=48)
    actual = six_weeks.values[targets]
    truth = daily_cycle(len(six_weeks))[targets]
    mae = float(np.abs(ours - actual).mean())
    assert mae < 0.2 * float(np.abs(flat - actual).mean())
    # Seasonal-naive carries yesterday's noise; the model averages it out.
    assert mae < float(np.abs(daily - actual).mean())
    # Close to the noise-free cycle: the error left is mostly the noise it cannot know.
    assert float(np.abs(ours - truth).mean()) < 0.3 * NOISE
    assert float(np.abs(ours - truth).max()) < 1.5 * NOISE


def test_training_reads_only_hours_ended_by_now(six_weeks: Hourly) -> None:
    now = six_weeks.hour_at(CUT)
    values = six_weeks.values.copy()
    values[CUT:] = values[CUT:] * 2.0 + 500.0
    changed_future = Hourly(first_hour=six_weeks.first_hour, values=values)
    a = train_zone(six_weeks, now=now)
    b = train_zone(changed_future, now=now)
    origins = np.array([CUT - 1, CUT + 30])
    np.testing.assert_array_equal(
        a.predict_positions(six_weeks, origins=origins, hours=48),
        b.predict_positions(six_weeks, origins=origins, hours=48),
    )
    assert a.train_end == now and a.trained_at == now
    assert a.train_start == T0 + MIN_HISTORY_H * H


def test_window_bounds_the_training_targets(six_weeks: Hourly) -> None:
    now = six_weeks.hour_at(CUT)
    model = train_zone(six_weeks, now=now, window=timedelta(days=20))
    assert model.train_start == now - timedelta(days=20)
    assert model.metadata()["train_start"] == (now - timedelta(days=20)).isoformat()
    # rows: every (origin, horizon) whose target lies in the window
    n = 20 * 24
    assert model.rows == sum(min(48, n - i) for i in range(n))


def test_too_short_a_history_raises() -> None:
    series = synthetic(30)
    enough = T0 + (MIN_HISTORY_H + MIN_TRAIN_H) * H
    train_zone(series, now=enough)
    with pytest.raises(InsufficientHistory, match="training needs"):
        train_zone(series, now=enough - H)


def test_unknown_kind_is_refused(six_weeks: Hourly) -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        train_zone(six_weeks, now=six_weeks.end, kind="forest")  # type: ignore[arg-type]


def test_boosting_kind_trains_and_forecasts() -> None:
    series = synthetic(28)
    model = train_zone(series, now=series.end, kind="hgb", origin_step_h=6)
    out = model.predict_positions(series, origins=np.array([len(series) - 1]), hours=24)
    assert model.kind == "hgb" and out.shape == (1, 24)
    assert np.all(np.isfinite(out)) and np.all(out >= 0)


def test_save_load_round_trip_predicts_identically(six_weeks: Hourly, tmp_path: Path) -> None:
    model = train_zone(six_weeks, now=six_weeks.hour_at(CUT), zone="ZZ")
    path = save_model(model, tmp_path / "models" / "ZZ.joblib")
    loaded = load_model(path, zone="ZZ")
    origins, _ = _test_grid(six_weeks)
    np.testing.assert_array_equal(
        model.predict_positions(six_weeks, origins=origins, hours=48),
        loaded.predict_positions(six_weeks, origins=origins, hours=48),
    )
    assert loaded.metadata() == model.metadata()
    assert [p.name for p in path.parent.iterdir()] == ["ZZ.joblib"]  # no temp file left


def test_load_refuses_what_it_cannot_trust(six_weeks: Hourly, tmp_path: Path) -> None:
    model = train_zone(six_weeks, now=six_weeks.end, zone="ZZ")
    path = save_model(model, tmp_path / "zz.joblib")
    with pytest.raises(IncompatibleModel, match="zone"):
        load_model(path, zone="YY")
    old = save_model(dataclasses.replace(model, sklearn_version="0.1"), tmp_path / "old.joblib")
    with pytest.raises(IncompatibleModel, match=r"scikit-learn 0\.1"):
        load_model(old)
    joblib.dump({"format": 99}, tmp_path / "other.joblib")
    with pytest.raises(IncompatibleModel, match="format"):
        load_model(tmp_path / "other.joblib")


def test_zone_forecaster_fit_then_predict(six_weeks: Hourly) -> None:
    history = Hourly(first_hour=six_weeks.first_hour, values=six_weeks.values[:CUT])
    forecaster = ZoneForecaster(zone="ZZ").fit(history)
    origin = T0 + CUT * H
    points = forecaster.predict(origin, 6)
    assert [moment for moment, _ in points] == [origin + i * H for i in range(6)]
    expected = forecaster.model.predict_positions(history, origins=np.array([CUT - 1]), hours=6)
    np.testing.assert_array_equal([v for _, v in points], expected[0])
    # Newer history moves the origin without retraining.
    forecaster.update(six_weeks)
    later = forecaster.predict(origin + 24 * H, 1)
    assert later[0][0] == origin + 24 * H
    assert forecaster.model.train_end == origin


def test_zone_forecaster_needs_fitting() -> None:
    with pytest.raises(RuntimeError, match=r"call fit\(\)"):
        ZoneForecaster().predict(T0, 1)
