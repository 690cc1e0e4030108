"""``ForecastingSource``: the broker's own forecasts behind the ``CarbonSource`` interface.

Rule: use it **only for zones whose provider has no forecast of its own**. A grid operator's
or Electricity Maps' / WattTime's forecast sees weather and market schedules that a model of
the intensity's own past cannot, so where a provider forecasts, its forecast wins. This
source is the fallback for providers that only report the current or past intensity (and
for simulations that want realistic forecast error rather than ``ReplaySource``'s perfect
foresight). The wiring that picks a source per zone should enforce this.

How a request is answered (``forecast(zone, start=..., end=...)``), one reading per UTC hour
overlapping ``[start, end)``:

* the *known* hours are those the history provider has that ended by ``clock.now()``; those
  are served as they are (``forecast=False``);
* the hours after the last known one, up to ``horizon_h`` hours past it, are forecast from
  it (``forecast=True``); later hours are left out, as ``ReplaySource`` leaves out hours
  outside its series. When the feed lags so that the last known hour ended more than
  ``stale_after`` before now, forecasts are marked ``stale``;
* the model of a zone is trained on first use and again once it is ``retrain_every`` old
  (training runs in a worker thread, never on the event loop). Until a zone has enough
  history to train (``MIN_HISTORY_H`` + ``MIN_TRAIN_H`` hours), forecasts fall back to the
  seasonal-naive (same hour yesterday) baseline and are marked ``estimated``.

Every reading carries ``source="broker-forecast"`` and the ``basis`` of its history (the
wiring builds it with the basis of the source it learns from: one basis, never mixed).
``restore`` installs saved models at start-up, and ``on_trained`` lets the owner save each
newly trained one (``store``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from carbon.base import IntensityReading
from carbon.basis import Basis
from carbon.forecast.baselines import Forecaster, Persistence, SeasonalNaive
from carbon.forecast.features import MIN_HISTORY_H, FeatureSpec
from carbon.forecast.history import HOUR, Hourly, as_utc, floor_hour
from carbon.forecast.model import (
    DEFAULT_WINDOW,
    InsufficientHistory,
    ModelKind,
    TrainedModel,
    train_zone,
)

__all__ = ["SOURCE_NAME", "Clock", "ForecastingSource", "HistoryProvider"]

SOURCE_NAME = "broker-forecast"
_RETRY_AFTER = timedelta(hours=1)  # after a failed training, wait before trying again
_FALLBACK_DAILY = SeasonalNaive(24)
_FALLBACK_FLAT = Persistence()


class Clock(Protocol):
    """Time as an input (``broker.domain.clock`` clocks satisfy this)."""

    def now(self) -> datetime: ...


class HistoryProvider(Protocol):
    """Recorded hourly intensity; ``carbon.replay.ReplaySource`` satisfies it.

    Called on the event loop, so it must answer from memory (a cache its owner refreshes).
    """

    def hourly(
        self, zone: str, *, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, float]]: ...


class ForecastingSource:
    """CarbonSource that serves known history and forecasts the hours after it."""

    name: str = SOURCE_NAME

    def __init__(
        self,
        history: HistoryProvider,
        *,
        clock: Clock,
        horizon_h: int = 48,
        retrain_every: timedelta = timedelta(days=7),
        train_window: timedelta = DEFAULT_WINDOW,
        kind: ModelKind = "ridge",
        stale_after: timedelta = timedelta(hours=3),
        on_trained: Callable[[TrainedModel], None] | None = None,
        basis: Basis | None = None,
    ) -> None:
        # The basis of `history`, stamped on every reading (None: undeclared, for tests).
        self.basis = basis
        self.bases: frozenset[Basis] = frozenset() if basis is None else frozenset({basis})
        self._history = history
        self._clock = clock
        self._spec = FeatureSpec(max_horizon_h=horizon_h)
        self._retrain_every = retrain_every
        self._window = train_window
        self._kind: ModelKind = kind
        self._stale_after = stale_after
        self._on_trained = on_trained
        self._models: dict[str, TrainedModel] = {}
        self._failed_at: dict[str, datetime] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def models(self) -> dict[str, TrainedModel]:
        """Zone -> current model (a copy), e.g. to save them all at shutdown."""
        return dict(self._models)

    def restore(self, models: Iterable[TrainedModel]) -> None:
        """Install saved models; each is retrained once it is ``retrain_every`` old."""
        for model in models:
            self._models[model.zone] = model

    def _now(self) -> datetime:
        return as_utc(self._clock.now(), name="clock.now()")

    def _known(self, zone: str, *, start: datetime, now: datetime) -> Hourly | None:
        """History hours in [start, hours ended by now), gaps carried forward."""
        points = self._history.hourly(zone, start=start, end=floor_hour(now))
        return Hourly.from_points(points)

    async def retrain(self, zone: str) -> TrainedModel:
        """Train `zone`'s model on the history known now; raises ``InsufficientHistory``."""
        async with self._locks.setdefault(zone, asyncio.Lock()):
            return await self._train(zone, self._now())

    async def _train(self, zone: str, now: datetime) -> TrainedModel:
        start = floor_hour(now) - self._window - MIN_HISTORY_H * HOUR
        series = self._known(zone, start=start, now=now)
        if series is None:
            raise InsufficientHistory(f"{zone}: no history before {now.isoformat()}")
        model = await asyncio.to_thread(
            train_zone,
            series,
            now=now,
            zone=zone,
            kind=self._kind,
            window=self._window,
            spec=self._spec,
        )
        self._models[zone] = model
        self._failed_at.pop(zone, None)
        if self._on_trained is not None:
            self._on_trained(model)
        return model

    async def _model(self, zone: str, now: datetime) -> TrainedModel | None:
        """The zone's model, (re)trained first when missing or due; None if it cannot be."""
        model = self._models.get(zone)
        if model is not None and now - model.trained_at < self._retrain_every:
            return model
        failed = self._failed_at.get(zone)
        if failed is not None and now - failed < _RETRY_AFTER:
            return model
        async with self._locks.setdefault(zone, asyncio.Lock()):
            model = self._models.get(zone)  # another request may have trained it meanwhile
            if model is None or now - model.trained_at >= self._retrain_every:
                try:
                    model = await self._train(zone, now)
                except InsufficientHistory:
                    self._failed_at[zone] = now
        return model

    def _forecaster(self, model: TrainedModel | None, known: Hourly) -> Forecaster:
        if model is not None and len(known) >= model.min_history_h:
            return model
        return _FALLBACK_DAILY if len(known) >= _FALLBACK_DAILY.min_history_h else _FALLBACK_FLAT

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        """Known hours from history, then forecasts up to ``horizon_h`` past the last one."""
        first = floor_hour(as_utc(start, name="start"))
        end_utc = as_utc(end, name="end")
        if end_utc <= first:
            return []
        now = self._now()
        known = self._known(zone, start=min(first, floor_hour(now) - MIN_HISTORY_H * HOUR), now=now)
        if known is None:
            return []
        hours: list[datetime] = []
        hour = first
        while hour < end_utc:
            hours.append(hour)
            hour += HOUR
        readings = [
            IntensityReading(
                zone=zone,
                at=h,
                gco2_per_kwh=float(known.values[known.position(h)]),
                source=self.name,
                basis=self.basis,
            )
            for h in hours
            if known.first_hour <= h < known.end
        ]
        future = [h for h in hours if h >= known.end]
        if future:
            readings.extend(await self._predict(zone, known=known, hours=future, now=now))
        return readings

    async def _predict(
        self, zone: str, *, known: Hourly, hours: list[datetime], now: datetime
    ) -> list[IntensityReading]:
        model = await self._model(zone, now)
        forecaster = self._forecaster(model, known)
        limit, estimated = self._spec.max_horizon_h, True
        if isinstance(forecaster, TrainedModel):  # a restored model may reach less far
            limit, estimated = min(limit, forecaster.spec.max_horizon_h), False
        last = len(known) - 1
        wanted = [h for h in hours if known.position(h) - last <= limit]
        if not wanted:
            return []
        span = known.position(wanted[-1]) - last
        row = forecaster.predict_positions(
            known, origins=np.array([last], dtype=np.int64), hours=span
        )[0]
        stale = now - known.end > self._stale_after
        return [
            IntensityReading(
                zone=zone,
                at=h,
                gco2_per_kwh=float(row[known.position(h) - last - 1]),
                source=self.name,
                forecast=True,
                estimated=estimated,
                stale=stale,
                basis=self.basis,
            )
            for h in wanted
        ]

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        """The hour containing `at`: from history when known, else forecast."""
        hour = floor_hour(as_utc(at, name="at"))
        readings = await self.forecast(zone, start=hour, end=hour + HOUR)
        return readings[0] if readings else None
