"""The quantile forecaster: leak-free features, ordered quantiles, learning, fallback, files."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from broker.demand.baseline import Naive, naive_quantiles
from broker.demand.features import features
from broker.demand.forecast import (
    DemandForecaster,
    ForecastConfig,
    ForecastMethod,
    retrain,
)
from broker.demand.history import HOUR, DemandRecord, DemandTable, Metric, SeriesKey
from broker.domain.enums import Tier

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
H100 = SeriesKey("H100", Tier.P2)
L4 = SeriesKey("L4", Tier.P1)
FAST = ForecastConfig(max_training_rows=5_000, horizon_hours=24)


def daily(days: int, *, seed: int, level: float = 60.0, swing: float = 40.0) -> np.ndarray:
    """A seeded daily cycle (peak mid-afternoon) with noise, never negative."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    cycle = level + swing * np.sin(2 * np.pi * (hours % 24 - 9) / 24)
    return np.maximum(cycle + rng.normal(0, 4, hours.size), 0.0)


def table(**series: np.ndarray) -> DemandTable:
    keys = {"h100": H100, "l4": L4}
    values = {keys[name]: v for name, v in series.items()}
    (hours,) = {v.size for v in values.values()}
    return DemandTable(start=T0, hours=hours, gpu_hours=values, peak_gpus=values)


def at(hours: int) -> datetime:
    return T0 + hours * HOUR


def matrix(forecaster: DemandForecaster, origin: datetime, t: DemandTable) -> np.ndarray:
    values = forecaster.predict_values(origin, 24, history=t)
    return np.stack([m for _, m in values.values()])


def test_features_read_only_the_hours_before_the_origin() -> None:
    y = daily(21, seed=1)
    origins = np.array([200, 300, 400], dtype=np.int64).repeat(48)
    horizons = np.tile(np.arange(1, 49, dtype=np.int64), 3)
    before = features(y, start=T0, origins=origins, horizons=horizons)
    for o in (200, 300, 400):
        changed = y.copy()
        changed[o:] = 1e6  # everything from the origin on
        after = features(changed, start=T0, origins=origins[origins == o], horizons=horizons[:48])
        for b, a in zip(before, after, strict=True):
            np.testing.assert_array_equal(b[origins == o], a)


def test_changing_the_future_leaves_fit_and_forecast_unchanged() -> None:
    y = daily(28, seed=2)
    now = at(21 * 24)
    t = table(h100=y, l4=y / 10)
    later = y.copy()
    later[21 * 24 :] *= 5  # the week after `now`: neither the fit nor the forecast may see it
    t_changed = table(h100=later, l4=later / 10)
    a = DemandForecaster(FAST).fit(t, now=now)
    b = DemandForecaster(FAST).fit(t_changed, now=now)
    assert a.method is ForecastMethod.GBM_QUANTILE
    np.testing.assert_array_equal(matrix(a, now, t), matrix(b, now, t_changed))
    np.testing.assert_array_equal(matrix(a, now, t), matrix(a, now, t.until(now)))
    # and the forecast does depend on the past: change yesterday and it moves
    earlier = y.copy()
    earlier[20 * 24 : 21 * 24] *= 3
    assert not np.array_equal(matrix(a, now, t), matrix(a, now, table(h100=earlier, l4=y / 10)))


def test_learns_a_daily_pattern_better_than_a_flat_mean() -> None:
    y = daily(35, seed=3)
    t = table(h100=y)
    now = 28 * 24
    forecaster = DemandForecaster(FAST).fit(t, now=at(now))
    errors, flat_errors, covered = [], [], []
    for day in range(7):
        o = now + 24 * day
        (f,) = matrix(forecaster, at(o), t)
        actual = y[o : o + 24]
        errors.append(np.abs(f[:, 0] - actual))
        flat_errors.append(np.abs(y[:now].mean() - actual))
        covered.append(actual <= f[:, 1])
    mae, flat_mae = np.mean(errors), np.mean(flat_errors)
    assert mae < 0.3 * flat_mae, (mae, flat_mae)
    assert 0.75 <= np.mean(covered) <= 1.0  # a p90 that covers roughly 90 % of hours


def test_quantiles_never_cross_even_when_the_models_do() -> None:
    rng = np.random.default_rng(4)
    y = rng.gamma(2.0, 20.0, 24 * 24)  # pure noise: independent quantile models disagree
    config = ForecastConfig(
        quantiles=(0.45, 0.5, 0.55, 0.9),
        horizon_hours=24,
        max_training_rows=3_000,
        min_samples_leaf=5,
        max_leaf_nodes=31,
        max_iter=100,
    )
    t = table(h100=y)
    forecaster = DemandForecaster(config).fit(t, now=at(21 * 24))
    origin = at(21 * 24)
    # the raw models do cross here, so ordering the output is the forecaster's doing
    x, _, _ = features(
        y,
        start=T0,
        origins=np.full(24, 21 * 24, dtype=np.int64),
        horizons=np.arange(1, 25, dtype=np.int64),
    )
    raw = np.column_stack([m.predict(x) for m in forecaster._models])
    assert (np.diff(raw, axis=1) < 0).any()
    for f in forecaster.predict(origin, 24, history=t):
        values = [v for _, v in f.levels]
        assert values == sorted(values)
        assert 0 <= f.p50 <= f.p90
        assert f.quantile(0.45) <= f.quantile(0.55)


def test_short_history_falls_back_to_seasonal_naive_and_says_so() -> None:
    y = daily(5, seed=5)
    t = table(h100=y)
    forecaster = DemandForecaster().fit(t, now=t.end)
    assert forecaster.method is ForecastMethod.SEASONAL_NAIVE
    forecasts = forecaster.predict(t.end, 24)
    assert {f.method for f in forecasts} == {ForecastMethod.SEASONAL_NAIVE}
    # the median is the same hour on the last day; the p90 sits above it
    np.testing.assert_allclose([f.p50 for f in forecasts], y[-24:])
    assert all(f.p90 >= f.p50 for f in forecasts)
    assert any(f.p90 > f.p50 for f in forecasts)


def test_naive_band_is_the_rules_own_past_error() -> None:
    history = np.array([10.0, 12.0, 11.0, 15.0, 14.0])  # last-value errors at lag 1: 2, -1, 4, -1
    (row,) = naive_quantiles(history, hours=1, quantiles=(0.5, 0.9), kind=Naive.LAST)
    errors = np.array([2.0, -1.0, 4.0, -1.0])
    expected_p90 = 14.0 + np.quantile(errors, 0.9) - np.quantile(errors, 0.5)
    np.testing.assert_allclose(row, [14.0, expected_p90])


def test_save_and_load_give_the_same_forecasts(tmp_path: Path) -> None:
    y = daily(21, seed=6)
    t = table(h100=y, l4=y / 4)
    forecaster = DemandForecaster(FAST).fit(t, now=t.end)
    path = tmp_path / "demand.pkl"
    forecaster.save(path)
    loaded = DemandForecaster.load(path)
    assert loaded.method is forecaster.method and loaded.fitted_at == t.end
    assert loaded.config == forecaster.config
    assert loaded.predict(t.end, 24) == forecaster.predict(t.end, 24)
    assert [p.name for p in tmp_path.iterdir()] == ["demand.pkl"]  # no temporary left behind
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"format": 99}))
    with pytest.raises(ValueError, match="format"):
        DemandForecaster.load(other)


def test_retrain_builds_fits_and_saves_from_records(tmp_path: Path) -> None:
    # a job of 4 GPUs starting every day at 08:00 for ten hours, for three weeks, plus noise
    rng = np.random.default_rng(8)
    records = []
    for day in range(22):
        for _ in range(3):
            start = T0 + timedelta(days=day, hours=8 + rng.uniform(-1, 1))
            records.append(
                DemandRecord(
                    submitted_at=start,
                    started_at=start,
                    ended_at=start + timedelta(hours=10),
                    estimated_duration_s=36_000,
                    gpus=4,
                    gpu_model="H100",
                    tier=Tier.P2,
                )
            )
    now = T0 + timedelta(days=21, minutes=25)  # retrain floors to the hour
    path = tmp_path / "model.pkl"
    forecaster = retrain(records, now=now, path=path, config=FAST)
    assert forecaster.method is ForecastMethod.GBM_QUANTILE
    assert forecaster.fitted_at == T0 + timedelta(days=21)
    forecasts = DemandForecaster.load(path).predict(T0 + timedelta(days=21), 24)
    by_hour = {f.at.hour: f.p50 for f in forecasts}
    assert by_hour[14] > 8 > by_hour[2]  # busy in the afternoon (12 GPUs), idle at night


def test_config_and_calls_are_checked() -> None:
    with pytest.raises(ValueError, match=r"0\.9"):
        ForecastConfig(quantiles=(0.5, 0.95))
    with pytest.raises(ValueError, match="ascending"):
        ForecastConfig(quantiles=(0.9, 0.5))
    forecaster = DemandForecaster()
    with pytest.raises(RuntimeError, match="fit"):
        forecaster.predict(T0, 24)
    t = table(h100=daily(3, seed=9))
    forecaster.fit(t, now=t.end)
    with pytest.raises(ValueError, match="hours"):
        forecaster.predict(t.end, 49)
    with pytest.raises(ValueError, match="outside"):
        forecaster.predict(t.end + HOUR, 24)
    assert Metric.PEAK_GPUS is forecaster.config.metric


def test_times_must_be_aware_and_on_the_hour() -> None:
    t = table(h100=daily(3, seed=10))
    with pytest.raises(ValueError, match="timezone"):
        DemandForecaster().fit(t, now=datetime(2024, 1, 3))
    forecaster = DemandForecaster().fit(t, now=t.end)
    with pytest.raises(ValueError, match="on the hour"):
        forecaster.predict(t.end - timedelta(minutes=30), 24)
