"""ForecastingSource through the CarbonSource protocol, over a ReplaySource history.

The clock is a ManualClock: the tests move time to trigger (or not) retraining, and the
replay history holds hours after "now", which the source must not use.
"""

from __future__ import annotations

import asyncio
from array import array
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from broker.domain.clock import ManualClock
from carbon.base import CarbonSource, IntensityReading
from carbon.forecast import (
    SOURCE_NAME,
    ForecastingSource,
    Hourly,
    TrainedModel,
    ZoneForecaster,
    train_zone,
)
from carbon.replay import HourlySeries, ReplaySource
from tests.carbon.forecast.conftest import T0, synthetic

H = timedelta(hours=1)
NOW = T0 + timedelta(days=36, hours=10, minutes=30)  # 10:30 UTC: 09:00 is the last ended hour


def _replay(series: Hourly) -> ReplaySource:
    hourly = HourlySeries(
        region="ZZ",
        first_hour=series.first_hour,
        values=array("d", series.values.tolist()),
        estimated=bytes(len(series)),
        filled_hours=0,
    )
    return ReplaySource({"ZZ": hourly})


class Saved:
    """on_trained callback that records the models it is given."""

    def __init__(self) -> None:
        self.models: list[TrainedModel] = []

    def __call__(self, model: TrainedModel) -> None:
        self.models.append(model)


@pytest.fixture
def series() -> Hourly:
    return synthetic(42)


def _source(
    series: Hourly, clock: ManualClock, saved: Saved | None = None, **kw: object
) -> ForecastingSource:
    return ForecastingSource(_replay(series), clock=clock, on_trained=saved, **kw)  # type: ignore[arg-type]


def test_satisfies_the_protocol(series: Hourly) -> None:
    assert isinstance(_source(series, ManualClock(NOW)), CarbonSource)


async def test_serves_history_then_forecasts_hourly_in_utc(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW))
    first_forecast = NOW.replace(minute=0)
    readings = await source.forecast("ZZ", start=first_forecast - 5 * H, end=NOW + 24 * H)
    hours = [r.at for r in readings]
    assert hours == [first_forecast - 5 * H + i * H for i in range(30)]
    assert all(r.at.tzinfo == UTC and r.at.minute == 0 for r in readings)
    assert all(r.source == SOURCE_NAME and r.zone == "ZZ" for r in readings)
    past, future = readings[:5], readings[5:]
    assert not any(r.forecast for r in past)
    assert [r.gco2_per_kwh for r in past] == [
        float(series.values[series.position(r.at)]) for r in past
    ]
    assert all(r.forecast and not r.estimated and not r.stale for r in future)
    # The forecasts are the trained model's, from the last hour ended by now.
    model = source.models["ZZ"]
    assert model.trained_at == NOW and model.train_end == first_forecast
    expected = ZoneForecaster.from_model(model, series).predict(NOW, len(future))
    assert [(r.at, r.gco2_per_kwh) for r in future] == expected
    # ...which are not the recorded future the replay history also holds.
    actual = [float(series.values[series.position(r.at)]) for r in future]
    assert [r.gco2_per_kwh for r in future] != actual


async def test_hours_beyond_the_horizon_are_left_out(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW), horizon_h=6)
    readings = await source.forecast("ZZ", start=NOW, end=NOW + 12 * H)
    assert [r.at for r in readings] == [NOW.replace(minute=0) + i * H for i in range(6)]


async def test_retrains_only_when_due(series: Hourly) -> None:
    clock, saved = ManualClock(NOW), Saved()
    source = _source(series, clock, saved, retrain_every=timedelta(days=2))
    await source.forecast("ZZ", start=NOW, end=NOW + H)
    clock.advance(timedelta(days=1).total_seconds())
    await source.forecast("ZZ", start=clock.now(), end=clock.now() + H)
    assert [m.trained_at for m in saved.models] == [NOW]
    clock.advance(timedelta(days=1).total_seconds())
    await source.current("ZZ", at=clock.now())
    assert [m.trained_at for m in saved.models] == [NOW, NOW + timedelta(days=2)]
    assert source.models["ZZ"] is saved.models[-1]


async def test_concurrent_requests_train_once(series: Hourly) -> None:
    saved = Saved()
    source = _source(series, ManualClock(NOW), saved)
    await asyncio.gather(*(source.forecast("ZZ", start=NOW, end=NOW + 3 * H) for _ in range(4)))
    assert len(saved.models) == 1


async def test_a_restored_model_is_used_without_training(series: Hourly) -> None:
    saved = Saved()
    restored = train_zone(series, now=NOW - timedelta(days=1), zone="ZZ")
    source = _source(series, ManualClock(NOW), saved)
    source.restore([restored])
    readings = await source.forecast("ZZ", start=NOW, end=NOW + 3 * H)
    assert saved.models == [] and source.models["ZZ"] is restored
    expected = ZoneForecaster.from_model(restored, series).predict(NOW, 4)
    assert [(r.at, r.gco2_per_kwh) for r in readings] == expected


async def test_short_history_falls_back_to_seasonal_naive() -> None:
    series = synthetic(3)
    source = _source(series, ManualClock(series.end))
    readings = await source.forecast("ZZ", start=series.end, end=series.end + 4 * H)
    assert source.models == {}
    assert all(r.forecast and r.estimated for r in readings)
    yesterday = [float(series.values[series.position(r.at - 24 * H)]) for r in readings]
    assert [r.gco2_per_kwh for r in readings] == yesterday


async def test_a_lagging_feed_marks_forecasts_stale(series: Hourly) -> None:
    now = series.end + 5 * H
    source = _source(series, ManualClock(now), stale_after=timedelta(hours=3))
    readings = await source.forecast("ZZ", start=series.end - H, end=now + H)
    assert [r.at for r in readings] == [series.end - H + i * H for i in range(7)]
    assert not readings[0].forecast and not readings[0].stale
    assert all(r.forecast and r.stale for r in readings[1:])


async def test_current_is_history_when_known_else_forecast(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW))
    past = await source.current("ZZ", at=NOW - 3 * H)
    ahead = await source.current("ZZ", at=NOW + 2 * H)
    assert isinstance(past, IntensityReading) and isinstance(ahead, IntensityReading)
    assert not past.forecast and past.at == NOW.replace(minute=0) - 3 * H
    assert past.gco2_per_kwh == float(series.values[series.position(past.at)])
    assert ahead.forecast and ahead.at == NOW.replace(minute=0) + 2 * H


async def test_unknown_zone_and_empty_ranges(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW))
    assert await source.forecast("XX", start=NOW, end=NOW + H) == []
    assert await source.current("XX", at=NOW) is None
    assert await source.forecast("ZZ", start=NOW, end=NOW - H) == []


async def test_naive_datetimes_are_refused(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW))
    with pytest.raises(ValueError, match="naive"):
        await source.forecast("ZZ", start=datetime(2021, 4, 1), end=NOW)


def test_values_are_hourly_numpy_compatible(series: Hourly) -> None:
    # Guard for the fixture itself: the replay history holds exactly the synthetic values.
    replay = _replay(series)
    points = replay.hourly("ZZ", start=T0, end=T0 + 3 * H)
    np.testing.assert_array_equal([v for _, v in points], series.values[:3])


async def test_a_restored_model_never_reaches_past_the_source_horizon(series: Hourly) -> None:
    source = _source(series, ManualClock(NOW), horizon_h=6)
    source.restore([train_zone(series, now=NOW, zone="ZZ")])  # a 48-hour model
    readings = await source.forecast("ZZ", start=NOW, end=NOW + 12 * H)
    assert len(readings) == 6 and all(not r.estimated for r in readings)
