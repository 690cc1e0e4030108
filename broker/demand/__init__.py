"""GPU demand forecasting: hourly demand tables, quantile forecasts, capacity shortfall.

Pure computation on values passed in (no database, no HTTP, no clock): the service layer
feeds `DemandRecord`s from its store and schedules `retrain`; the burst planner reads
`shortfalls`. Method and backtest figures: docs/demand-forecast.md.
"""

from broker.demand.capacity import Shortfall, shortfalls
from broker.demand.forecast import (
    DemandForecast,
    DemandForecaster,
    ForecastConfig,
    ForecastMethod,
    retrain,
)
from broker.demand.history import (
    ANY_MODEL,
    DemandRecord,
    DemandTable,
    Grouping,
    Metric,
    SeriesKey,
    build_table,
    floor_hour,
)

__all__ = [
    "ANY_MODEL",
    "DemandForecast",
    "DemandForecaster",
    "DemandRecord",
    "DemandTable",
    "ForecastConfig",
    "ForecastMethod",
    "Grouping",
    "Metric",
    "SeriesKey",
    "Shortfall",
    "build_table",
    "floor_hour",
    "retrain",
    "shortfalls",
]
