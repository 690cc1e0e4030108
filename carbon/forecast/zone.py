"""``ZoneForecaster``: a trained model together with the history it forecasts from.

The model and the history are kept apart on purpose: a model is retrained rarely (weekly,
say), while the history grows every hour, so ``update`` swaps in newer history without
refitting. ``predict`` only reads hours that ended by its origin, however long the history
it holds, so a forecaster fed a complete replay series still forecasts honestly.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from carbon.forecast.baselines import forecast_at
from carbon.forecast.features import FeatureSpec
from carbon.forecast.history import Hourly, SeriesLike
from carbon.forecast.model import DEFAULT_WINDOW, ModelKind, TrainedModel, train_zone

__all__ = ["ZoneForecaster"]


def _hourly(series: Hourly | SeriesLike) -> Hourly:
    return series if isinstance(series, Hourly) else Hourly.from_series(series)


class ZoneForecaster:
    """Fit on one zone's hourly history, then forecast from any origin it covers."""

    def __init__(
        self,
        *,
        zone: str = "",
        kind: ModelKind = "ridge",
        window: timedelta = DEFAULT_WINDOW,
        spec: FeatureSpec | None = None,
    ) -> None:
        self.zone = zone
        self._kind: ModelKind = kind
        self._window = window
        self._spec = spec
        self._model: TrainedModel | None = None
        self._history: Hourly | None = None

    @classmethod
    def from_model(cls, model: TrainedModel, history: Hourly | SeriesLike) -> ZoneForecaster:
        """A forecaster around an already trained (e.g. loaded) model."""
        forecaster = cls(zone=model.zone, kind=model.kind, spec=model.spec)
        forecaster._model = model
        forecaster._history = _hourly(history)
        return forecaster

    @property
    def model(self) -> TrainedModel:
        """The trained model; raises before ``fit``."""
        if self._model is None:
            raise RuntimeError("ZoneForecaster is not fitted; call fit() first")
        return self._model

    def fit(self, series: Hourly | SeriesLike, *, now: datetime | None = None) -> ZoneForecaster:
        """Train on `series` (its hours ended by `now`; all of it by default) and keep it."""
        history = _hourly(series)
        self._model = train_zone(
            history,
            now=now if now is not None else history.end,
            zone=self.zone,
            kind=self._kind,
            window=self._window,
            spec=self._spec,
        )
        self._history = history
        return self

    def update(self, series: Hourly | SeriesLike) -> None:
        """Forecast from newer history from now on, without retraining."""
        self._history = _hourly(series)

    def predict(self, origin: datetime, hours: int) -> list[tuple[datetime, float]]:
        """(hour start, gCO2e/kWh) for the `hours` hours after the last hour ended by `origin`."""
        if self._history is None:
            raise RuntimeError("ZoneForecaster has no history; call fit() or update() first")
        return forecast_at(self.model, self._history, origin=origin, hours=hours)
