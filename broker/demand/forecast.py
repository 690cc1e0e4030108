"""Quantile forecasts of hourly GPU demand per series, up to two days ahead.

One `HistGradientBoostingRegressor(loss="quantile")` per quantile, trained on every series
of a `DemandTable` at once with the scale-free features of `broker.demand.features`.
Gradient-boosted trees because the signal is a level that persists (long training jobs)
plus a daily and weekly swing, with interactions a linear model would miss (the swing
matters less the further ahead). Training rows are a seeded sample of at most
`max_training_rows`, so a fit takes about a second per quantile on one core whatever the
history; scikit-learn's OpenMP threads are limited to `threads` (default 1), because a
retrain shares the machine with the event loop, and on a busy machine OpenMP's spinning
threads made a fit over ten times slower.

Separate models per quantile can cross; each forecast row is sorted so a p90 is never
below its p50, and clipped at zero. With less history than `min_history_hours` (or an
origin with less than a week behind it) there is nothing to learn lags from, and the
forecaster says so: it answers with the seasonal-naive rule of `broker.demand.baseline`
and marks every forecast `method = seasonal_naive`.

The fitted forecaster keeps the table it was fitted on, so after `load` it can forecast
from the fit time without any other input. `save`/`load` use pickle (scikit-learn models
have no other stable format): load only files this process or its operators wrote. A file
from another scikit-learn version is refused (`ValueError`): retrain instead.
"""

from __future__ import annotations

import enum
import os
import pickle
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no py.typed

from broker.demand.baseline import Naive, naive_quantiles
from broker.demand.features import (
    FEATURES,
    MAX_HORIZON,
    MIN_ORIGIN,
    WEEK,
    features,
    training_pairs,
)
from broker.demand.history import (
    HOUR,
    DemandRecord,
    DemandTable,
    FloatArray,
    Grouping,
    Metric,
    SeriesKey,
    build_table,
    floor_hour,
)
from broker.domain.enums import Tier

_JITTER = 1e-6  # in scaled units (GPUs / scale), see `_rows`
_FORMAT = 1  # bump when the pickled layout changes; `load` refuses other versions


class ForecastMethod(enum.StrEnum):
    GBM_QUANTILE = "gbm_quantile"
    SEASONAL_NAIVE = "seasonal_naive"  # too little history to learn from


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastConfig:
    """What is forecast and how the models are fitted; the defaults suit hourly GPU demand."""

    quantiles: tuple[float, ...] = (0.5, 0.9)  # must include 0.5 and 0.9
    horizon_hours: int = 48  # the furthest hour a model is trained for
    metric: Metric = Metric.PEAK_GPUS
    min_history_hours: int = 2 * WEEK  # below it: seasonal naive (a week of origins)
    train_window_hours: int = 8 * WEEK  # origins from at most this far back
    max_training_rows: int = 20_000  # sampled (seeded) from every (series, origin, horizon)
    threads: int = 1  # OpenMP threads of scikit-learn while fitting and predicting
    # Few, small trees: the rows overlap (48 horizons per origin) and the signal beyond the
    # last value is weak, so bigger models learned noise and their p90 covered too little.
    max_iter: int = 50
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        qs = self.quantiles
        if not qs or any(not 0 < q < 1 for q in qs) or list(qs) != sorted(set(qs)):
            raise ValueError(f"quantiles must be distinct, ascending, in (0, 1): {qs}")
        if 0.5 not in qs or 0.9 not in qs:
            raise ValueError("quantiles must include 0.5 and 0.9 (the p50 and p90 of a forecast)")
        if not 1 <= self.horizon_hours <= MAX_HORIZON:
            raise ValueError(f"horizon_hours must be in [1, {MAX_HORIZON}]")
        if self.min_history_hours <= MIN_ORIGIN:
            raise ValueError(f"min_history_hours must exceed {MIN_ORIGIN} (lags need a week)")
        if min(self.train_window_hours, self.max_training_rows, self.threads) < 1:
            raise ValueError("train_window_hours, max_training_rows and threads must be ≥ 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandForecast:
    """Demand in the hour starting `at` for one series; `levels` holds every quantile."""

    at: datetime
    gpu_model: str
    tier: Tier | None  # None: all tiers together
    p50: float
    p90: float
    method: ForecastMethod
    levels: tuple[tuple[float, float], ...] = field(default=())  # (quantile, value), ascending

    def quantile(self, q: float) -> float:
        """The forecast at quantile `q`, one of the configured ones."""
        for level, value in self.levels:
            if level == q:
                return value
        if q in (0.5, 0.9):
            return self.p50 if q == 0.5 else self.p90
        raise KeyError(f"quantile {q} was not forecast; have {[lv for lv, _ in self.levels]}")


class DemandForecaster:
    """Fit on a `DemandTable` as known at `now`; forecast from any origin up to its end."""

    def __init__(self, config: ForecastConfig | None = None) -> None:
        self.config = config or ForecastConfig()
        self.method: ForecastMethod | None = None  # None until fitted
        self.fitted_at: datetime | None = None
        self.training_rows = 0
        self._models: list[Any] = []  # one regressor per quantile, in `config.quantiles` order
        self._history: DemandTable | None = None

    def fit(self, table: DemandTable, *, now: datetime) -> DemandForecaster:
        """Learn from the hours of `table` before `now` (later hours are ignored)."""
        if table.index(now) > table.hours:  # `index` checks aware and on the hour
            raise ValueError(f"the table ends at {table.end.isoformat()}, before now")
        cfg = self.config
        history = table.until(now)
        self._history, self.fitted_at, self._models = history, now, []
        self.method, self.training_rows = ForecastMethod.SEASONAL_NAIVE, 0
        if history.hours < cfg.min_history_hours:
            return self
        x, target = self._rows(
            history, known=history.hours, first_origin=history.hours - cfg.train_window_hours
        )
        if target.size == 0:
            return self
        with threadpool_limits(limits=cfg.threads, user_api="openmp"):
            self._models = [self._fit_one(x, target, quantile=q) for q in cfg.quantiles]
        self.method, self.training_rows = ForecastMethod.GBM_QUANTILE, int(target.size)
        return self

    def _fit_one(self, x: FloatArray, target: FloatArray, *, quantile: float) -> Any:
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=quantile,
            max_iter=self.config.max_iter,
            learning_rate=self.config.learning_rate,
            max_leaf_nodes=self.config.max_leaf_nodes,
            min_samples_leaf=self.config.min_samples_leaf,
            early_stopping=False,
            random_state=self.config.seed,
        )
        return model.fit(x, target)

    def _rows(
        self, history: DemandTable, *, known: int, first_origin: int
    ) -> tuple[FloatArray, FloatArray]:
        """Feature rows and targets of every series for origins ≥ `first_origin`, targets <
        `known`; a seeded uniform sample of `max_training_rows` when there are more.

        Sampling (series, origin, horizon) triples bounds the fit time whatever the number
        of series or the window, and keeps every horizon and hour of day represented.
        """
        cfg = self.config
        origins, horizons = training_pairs(
            known=known, first_origin=first_origin, horizon=cfg.horizon_hours
        )
        keys = history.keys
        total = len(keys) * origins.size
        if total == 0:
            return np.zeros((0, len(FEATURES))), np.zeros(0)
        rng = np.random.default_rng(cfg.seed)
        picked = np.sort(rng.choice(total, size=min(total, cfg.max_training_rows), replace=False))
        xs, ys = [], []
        for i, key in enumerate(keys):
            rows = picked[(picked >= i * origins.size) & (picked < (i + 1) * origins.size)]
            o, h = origins[rows - i * origins.size], horizons[rows - i * origins.size]
            y = history.series(key, cfg.metric)
            x, scale, base = features(y, start=history.start, origins=o, horizons=h)
            xs.append(x)
            ys.append((y[o + h - 1] - base) / scale)
        target = np.concatenate(ys)
        # Jitter, far below one GPU, breaks ties: most hours change by exactly zero, and
        # scikit-learn's quantile boosting then never moves off its initial value (every
        # tie counts as an overshoot). The usual cure for quantiles of counts (Machado and
        # Santos Silva, 2005). Without it, `test_retrain_builds_fits_and_saves_from_records`
        # forecasts no change at all for a job that starts at 08:00 every day.
        target += rng.uniform(-_JITTER, _JITTER, target.size)
        return np.concatenate(xs), target

    def predict(
        self, origin: datetime, hours: int, *, history: DemandTable | None = None
    ) -> list[DemandForecast]:
        """Forecasts for the `hours` hours from `origin`, per series, sorted by series then hour.

        `history` (default: the table fitted on) must reach `origin`; only the hours before
        `origin` are read, so passing a longer table is safe.
        """
        values = self.predict_values(origin, hours, history=history)
        qs = self.config.quantiles
        out = []
        for key, (method, matrix) in values.items():
            for h, row in enumerate(matrix):
                levels = tuple(zip(qs, (float(v) for v in row), strict=True))
                out.append(
                    DemandForecast(
                        at=origin + h * HOUR,
                        gpu_model=key.gpu_model,
                        tier=key.tier,
                        p50=dict(levels)[0.5],
                        p90=dict(levels)[0.9],
                        method=method,
                        levels=levels,
                    )
                )
        return out

    def predict_values(
        self, origin: datetime, hours: int, *, history: DemandTable | None = None
    ) -> dict[SeriesKey, tuple[ForecastMethod, FloatArray]]:
        """Per series: the method used and a (hours, quantiles) array; `predict` without objects."""
        if self.method is None or self._history is None:
            raise RuntimeError("fit (or load) the forecaster before predicting")
        if not 1 <= hours <= self.config.horizon_hours:
            raise ValueError(f"hours must be in [1, {self.config.horizon_hours}], got {hours}")
        table = history if history is not None else self._history
        if not 0 <= table.index(origin) <= table.hours:  # `index` checks aware and on the hour
            raise ValueError(f"origin {origin.isoformat()} is outside the history")
        known = table.until(origin)
        keys = sorted(set(known.keys) | set(self._history.keys), key=SeriesKey.sort_key)
        use_model = self.method is ForecastMethod.GBM_QUANTILE and known.hours >= MIN_ORIGIN
        if not use_model:
            return {
                key: (ForecastMethod.SEASONAL_NAIVE, self._naive(known, key, hours)) for key in keys
            }
        origins = np.full(hours, known.hours, dtype=np.int64)
        horizons = np.arange(1, hours + 1, dtype=np.int64)
        blocks = [
            features(
                known.series(key, self.config.metric),
                start=known.start,
                origins=origins,
                horizons=horizons,
            )
            for key in keys
        ]
        x = np.concatenate([b[0] for b in blocks])
        scale = np.concatenate([b[1] for b in blocks])
        base = np.concatenate([b[2] for b in blocks])
        with threadpool_limits(limits=self.config.threads, user_api="openmp"):
            change = np.column_stack([m.predict(x) for m in self._models])
        raw = base[:, None] + change * scale[:, None]
        raw = np.maximum(np.sort(raw, axis=1), 0.0)  # non-crossing, never negative
        return {
            key: (ForecastMethod.GBM_QUANTILE, raw[i * hours : (i + 1) * hours])
            for i, key in enumerate(keys)
        }

    def _naive(self, known: DemandTable, key: SeriesKey, hours: int) -> FloatArray:
        return naive_quantiles(
            known.series(key, self.config.metric),
            hours=hours,
            quantiles=self.config.quantiles,
            kind=Naive.DAY,
        )

    def save(self, path: Path) -> None:
        """Write atomically (a temporary file renamed over `path`), so readers never see half."""
        if self.method is None:
            raise RuntimeError("nothing to save: the forecaster is not fitted")
        state = {
            "format": _FORMAT,
            "sklearn": sklearn.__version__,
            "config": self.config,
            "method": self.method,
            "fitted_at": self.fitted_at,
            "training_rows": self.training_rows,
            "models": self._models,
            "history": self._history,
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> DemandForecaster:
        """A forecaster saved by `save` (a trusted file: this is pickle)."""
        with Path(path).open("rb") as f:
            state = pickle.load(f)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a demand forecaster of format {_FORMAT}")
        if state.get("sklearn") != sklearn.__version__:
            raise ValueError(
                f"{path} was saved by scikit-learn {state.get('sklearn')}, "
                f"this is {sklearn.__version__}: retrain"
            )
        forecaster = cls(state["config"])
        forecaster.method = state["method"]
        forecaster.fitted_at = state["fitted_at"]
        forecaster.training_rows = state["training_rows"]
        forecaster._models = state["models"]
        forecaster._history = state["history"]
        return forecaster


def retrain(
    records: Iterable[DemandRecord],
    *,
    now: datetime,
    path: Path,
    config: ForecastConfig | None = None,
    grouping: Grouping = Grouping.MODEL_TIER,
    keys: Sequence[SeriesKey] = (),
) -> DemandForecaster:
    """Build the table ending at the hour of `now`, fit, save to `path`; returns the forecaster.

    Synchronous and CPU-bound (seconds): schedule it on a worker thread or process (e.g.
    APScheduler's default thread pool), never on the event loop. `records` need only cover
    the training window plus a week (`config.train_window_hours + 168` hours before `now`);
    older ones are ignored. `keys` forces series that may have had no jobs.
    """
    config = config or ForecastConfig()
    end = floor_hour(now)
    start = end - (config.train_window_hours + WEEK) * HOUR
    table = build_table(records, start=start, end=end, grouping=grouping, keys=keys)
    forecaster = DemandForecaster(config).fit(table, now=end)
    forecaster.save(path)
    return forecaster
