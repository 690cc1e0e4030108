"""Rolling-origin backtest of the forecaster against naive rules, on one `DemandTable`.

The first `train_hours` of the table are history only. From then on, every `step_hours`
(one day by default, at the table's hour of day) the forecaster predicts the next
`horizon_hours` from what was known at that origin, and so does each naive rule; the
forecaster is refitted on all hours before the origin every `refit_every_hours` (weekly),
as a scheduled retrain would. Scores per series and method, over every forecast hour:

* `mae_p50`: mean absolute error of the median;
* `under_p90`: the share of hours whose actual value exceeded the p90, i.e. how often a
  plan sized at the p90 would have come up short (nominally 10 %);
* `pinball_p90`: the quantile loss at 0.9, which rewards a p90 that is both covering and
  tight (a p90 far above every actual has no under-forecast hours but a large loss).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from broker.demand.baseline import Naive, naive_quantiles
from broker.demand.forecast import DemandForecaster, ForecastConfig, ForecastMethod
from broker.demand.history import HOUR, DemandTable, FloatArray, SeriesKey

MODEL = "model"  # the method label of the forecaster in the scores
METHODS: tuple[str, ...] = (MODEL, *(n.value for n in Naive))
_QUANTILES = (0.5, 0.9)


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    series: SeriesKey
    method: str
    hours: int
    mean_actual: float
    mae_p50: float
    under_p90: float
    pinball_p90: float

    @property
    def mae_share(self) -> float:
        """MAE relative to the mean actual value (0 when the series is empty)."""
        return self.mae_p50 / self.mean_actual if self.mean_actual > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestResult:
    origins: tuple[datetime, ...]
    fits: int
    naive_fallbacks: int  # (origin, series) forecasts where the forecaster fell back to naive
    scores: tuple[Score, ...]

    def score(self, series: SeriesKey, method: str) -> Score:
        for s in self.scores:
            if s.series == series and s.method == method:
                return s
        raise KeyError(f"no score for {series.label} / {method}")


def _score(series: SeriesKey, method: str, actual: FloatArray, pred: FloatArray) -> Score:
    p50, p90 = pred[:, 0], pred[:, 1]
    diff = actual - p90
    return Score(
        series=series,
        method=method,
        hours=int(actual.size),
        mean_actual=float(actual.mean()),
        mae_p50=float(np.abs(actual - p50).mean()),
        under_p90=float((diff > 1e-9).mean()),
        pinball_p90=float(np.maximum(0.9 * diff, -0.1 * diff).mean()),
    )


def rolling_origin(
    table: DemandTable,
    *,
    train_hours: int,
    step_hours: int = 24,
    horizon_hours: int = 24,
    refit_every_hours: int = 168,
    config: ForecastConfig | None = None,
) -> BacktestResult:
    """Backtest every series of `table` (see the module docstring); deterministic."""
    config = config or ForecastConfig()
    if horizon_hours > config.horizon_hours:
        raise ValueError("horizon_hours exceeds the forecaster's horizon")
    if not 0 < train_hours <= table.hours - horizon_hours:
        raise ValueError("the table is too short for train_hours plus one horizon")
    forecaster = DemandForecaster(config)
    last_fit: int | None = None
    fits = fallbacks = 0
    actuals: dict[SeriesKey, list[FloatArray]] = defaultdict(list)
    preds: dict[tuple[SeriesKey, str], list[FloatArray]] = defaultdict(list)
    origins = range(train_hours, table.hours - horizon_hours + 1, step_hours)
    for o in origins:
        origin = table.start + o * HOUR
        if last_fit is None or o - last_fit >= refit_every_hours:
            forecaster.fit(table, now=origin)
            last_fit, fits = o, fits + 1
        known = table.until(origin)
        values = forecaster.predict_values(origin, horizon_hours, history=known)
        for key, (method, matrix) in values.items():
            fallbacks += method is ForecastMethod.SEASONAL_NAIVE
            y = table.series(key, config.metric)
            actuals[key].append(y[o : o + horizon_hours])
            preds[key, MODEL].append(matrix[:, [config.quantiles.index(q) for q in _QUANTILES]])
            for rule in Naive:
                preds[key, rule.value].append(
                    naive_quantiles(y[:o], hours=horizon_hours, quantiles=_QUANTILES, kind=rule)
                )
    scores = tuple(
        _score(key, method, np.concatenate(actuals[key]), np.concatenate(preds[key, method]))
        for key in sorted(actuals, key=SeriesKey.sort_key)
        for method in METHODS
    )
    return BacktestResult(
        origins=tuple(table.start + o * HOUR for o in origins),
        fits=fits,
        naive_fallbacks=fallbacks,
        scores=scores,
    )
