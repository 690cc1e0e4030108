"""The broker's own grid-carbon-intensity forecaster, for zones whose provider has none.

Use it **only where a provider publishes no forecast of its own** (see ``source``): it
learns each zone's daily and weekly pattern from past hours, while a provider's forecast
also sees weather and scheduled generation. Pieces:

* ``history.Hourly``: the gap-free hourly array everything reads;
* ``features``: what a forecast may look at (strictly the hours up to its origin);
* ``model.train_zone`` / ``TrainedModel``: per-zone scikit-learn model, 1..48 h ahead;
* ``baselines``: persistence and seasonal-naive, the bars a model must clear;
* ``zone.ZoneForecaster``: model + history, ``fit(series)`` then ``predict(origin, hours)``;
* ``store``: save and restore trained models across restarts;
* ``source.ForecastingSource``: all of it behind the ``CarbonSource`` protocol;
* ``evaluation``: MAE/MAPE and the share of the time-shifting saving forecasts capture.

Figures and method: ``docs/carbon-forecast.md``; evaluation: ``benchmarks/carbon_forecast.py``.
"""

from carbon.forecast.baselines import Forecaster, Persistence, SeasonalNaive, forecast_at
from carbon.forecast.features import FEATURE_VERSION, MIN_HISTORY_H, FeatureSpec
from carbon.forecast.history import Hourly
from carbon.forecast.model import (
    MIN_TRAIN_H,
    InsufficientHistory,
    ModelKind,
    TrainedModel,
    train_zone,
)
from carbon.forecast.source import SOURCE_NAME, ForecastingSource, HistoryProvider
from carbon.forecast.store import IncompatibleModel, load_model, save_model
from carbon.forecast.zone import ZoneForecaster

__all__ = [
    "FEATURE_VERSION",
    "MIN_HISTORY_H",
    "MIN_TRAIN_H",
    "SOURCE_NAME",
    "FeatureSpec",
    "Forecaster",
    "ForecastingSource",
    "HistoryProvider",
    "Hourly",
    "IncompatibleModel",
    "InsufficientHistory",
    "ModelKind",
    "Persistence",
    "SeasonalNaive",
    "TrainedModel",
    "ZoneForecaster",
    "forecast_at",
    "load_model",
    "save_model",
    "train_zone",
]
