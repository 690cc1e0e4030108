"""The trained per-zone model: how it is fitted, what it remembers, how it forecasts.

Two regressors share the features of ``features.design`` and the target
``v[target] - v[origin]``:

* ``ridge`` (the default): one ``Ridge`` per horizon 1..48 on standardised features, the
  "direct" multi-horizon strategy. Each horizon gets its own weights on the same features,
  so the 1-hour model can stay close to persistence while the 24-hour model leans on
  yesterday's same hour. One penalty for all horizons is picked from ``_ALPHAS`` on the
  latest quarter of the training window (scored at ``_ALPHA_HORIZONS``): a year of
  history wants almost none, a month often wants a lot (``docs/carbon-forecast.md``).
* ``hgb``: one ``HistGradientBoostingRegressor`` over all horizons, with the horizon as a
  feature.

Ridge is the default because it won the validation on 2021 data (train January-September,
validate October-December; ``benchmarks/carbon_forecast.py --select``, figures in
``docs/carbon-forecast.md``): lower error at short horizons in every zone and about as good
elsewhere, for about a second of training a zone-year on two cores instead of six or more, and
no randomness. Boosting stays selectable for comparison.

``train_zone`` is the one entry point for (re)training: a plain sync function of the series
and an explicit ``now`` (only hours that ended by ``now`` are used), so a scheduler can run it
in a worker thread and tests can pin the training window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import sklearn
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from carbon.forecast.features import MIN_HISTORY_H, FeatureSpec, design
from carbon.forecast.history import HOUR, Hourly, SeriesLike, as_utc

__all__ = [
    "DEFAULT_WINDOW",
    "MIN_TRAIN_H",
    "InsufficientHistory",
    "ModelKind",
    "TrainedModel",
    "train_zone",
]

ModelKind = Literal["ridge", "hgb"]
DEFAULT_WINDOW = timedelta(days=365)
MIN_TRAIN_H = 14 * 24  # two weeks of targets after the one-week warm-up
_ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)  # ridge penalties tried (standardised features)
_HOLDOUT = 0.25  # latest share of the training targets used to pick the penalty
_ALPHA_HORIZONS = (1, 3, 6, 12, 24, 36, 48)  # horizons the penalty is scored on

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class InsufficientHistory(ValueError):
    """Too few known hours to train (or to forecast from)."""


class _PerHorizonRidge:
    """One standardised ridge regression per horizon, one penalty chosen for all of them."""

    def __init__(self) -> None:
        self.models: dict[int, Any] = {}
        self.alpha: float | None = None
        self.validation_mae: dict[float, float] = {}

    @staticmethod
    def _fit_all(x: FloatArray, y: FloatArray, horizons: IntArray, alpha: float) -> dict[int, Any]:
        models: dict[int, Any] = {}
        for h in np.unique(horizons):
            rows = horizons == h
            models[int(h)] = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(
                x[rows], y[rows]
            )
        return models

    @staticmethod
    def _predict_all(models: dict[int, Any], x: FloatArray, horizons: IntArray) -> FloatArray:
        out = np.empty(len(x), dtype=np.float64)
        for h in np.unique(horizons):
            rows = horizons == h
            model = models.get(int(h))
            if model is None:
                raise ValueError(f"no model was trained for horizon {int(h)} h")
            out[rows] = model.predict(x[rows])
        return out

    def fit(self, x: FloatArray, y: FloatArray, horizons: IntArray, targets: IntArray) -> None:
        # The penalty is chosen on the latest quarter of the window (a time split: shuffled
        # cross-validation would let neighbouring, near-identical hours vouch for each
        # other and pick too little shrinkage), then the models are refitted on everything.
        # Scored on a few representative horizons only: a fifth of the fits, same choice.
        cut = targets.min() + (1.0 - _HOLDOUT) * (targets.max() - targets.min())
        probe = np.isin(horizons, _ALPHA_HORIZONS)
        early, late = probe & (targets < cut), probe & (targets >= cut)
        for alpha in _ALPHAS:
            models = self._fit_all(x[early], y[early], horizons[early], alpha)
            error = np.abs(self._predict_all(models, x[late], horizons[late]) - y[late])
            self.validation_mae[alpha] = float(error.mean())
        self.alpha = min(self.validation_mae, key=lambda a: self.validation_mae[a])
        self.models = self._fit_all(x, y, horizons, self.alpha)

    def predict(self, x: FloatArray, horizons: IntArray) -> FloatArray:
        return self._predict_all(self.models, x, horizons)


class _PooledBoosting:
    """One gradient-boosted tree ensemble over all horizons (horizon is a feature)."""

    def __init__(self) -> None:
        # Fixed seed: early stopping holds out a random 10 %, and retrains must be repeatable.
        self.model: Any = HistGradientBoostingRegressor(
            max_iter=300, learning_rate=0.1, min_samples_leaf=100, random_state=0
        )

    def fit(self, x: FloatArray, y: FloatArray, horizons: IntArray, targets: IntArray) -> None:
        del horizons, targets  # the horizon is already a column of x
        self.model.fit(x, y)

    def predict(self, x: FloatArray, horizons: IntArray) -> FloatArray:
        del horizons
        return np.asarray(self.model.predict(x), dtype=np.float64)


_Regressor = _PerHorizonRidge | _PooledBoosting


def _regressor(kind: ModelKind) -> _Regressor:
    if kind == "ridge":
        return _PerHorizonRidge()
    if kind == "hgb":
        return _PooledBoosting()
    raise ValueError(f"unknown model kind {kind!r}; expected 'ridge' or 'hgb'")


def _rows(origins: IntArray, hours: int) -> tuple[IntArray, IntArray]:
    """Origin and horizon of every row, horizon-major (all origins at h=1, then h=2...)."""
    horizons = np.arange(1, hours + 1, dtype=np.int64)
    return np.tile(origins, hours), np.repeat(horizons, origins.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainedModel:
    """A fitted forecaster for one zone, with what it was trained on (saved alongside)."""

    zone: str
    kind: ModelKind
    spec: FeatureSpec
    regressor: _Regressor = field(repr=False)
    train_start: datetime  # first target hour used
    train_end: datetime  # instant after the last target hour used
    trained_at: datetime  # the `now` of train_zone
    rows: int  # (origin, horizon) training rows
    sklearn_version: str = sklearn.__version__

    @property
    def name(self) -> str:
        return f"model-{self.kind}"

    @property
    def min_history_h(self) -> int:
        return MIN_HISTORY_H

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description: what a status page or the model file's sidecar shows."""
        return {
            "zone": self.zone,
            "kind": self.kind,
            "feature_version": self.spec.version,
            "max_horizon_h": self.spec.max_horizon_h,
            "daily_harmonics": self.spec.daily_harmonics,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "trained_at": self.trained_at.isoformat(),
            "rows": self.rows,
            "ridge_alpha": getattr(self.regressor, "alpha", None),
            "sklearn_version": self.sklearn_version,
        }

    def predict_positions(self, history: Hourly, *, origins: IntArray, hours: int) -> FloatArray:
        """Matrix (origins x hours) of forecasts, never below zero."""
        if not 1 <= hours <= self.spec.max_horizon_h:
            raise ValueError(f"hours must be 1..{self.spec.max_horizon_h}, got {hours}")
        origins = np.asarray(origins, dtype=np.int64)
        if origins.size == 0:
            return np.empty((0, hours), dtype=np.float64)
        row_origins, row_horizons = _rows(origins, hours)
        x, base = design(
            history.values,
            first_index=history.first_index,
            origins=row_origins,
            horizons=row_horizons,
            spec=self.spec,
        )
        flat = np.maximum(base + self.regressor.predict(x, row_horizons), 0.0)
        return flat.reshape(hours, origins.size).T.copy()


def train_zone(
    series: Hourly | SeriesLike,
    *,
    now: datetime,
    zone: str = "",
    kind: ModelKind = "ridge",
    window: timedelta = DEFAULT_WINDOW,
    spec: FeatureSpec | None = None,
    origin_step_h: int = 1,
) -> TrainedModel:
    """Fit a model on the hours of `series` that ended by `now`, the last `window` of them.

    Targets are the hours in the window; their features may read up to a week before it.
    Every known hour is an origin (every `origin_step_h`-th with a larger step, to train
    faster) for every horizon whose target is also known. Raises ``InsufficientHistory``
    with fewer than a week of warm-up plus ``MIN_TRAIN_H`` hours.
    """
    now = as_utc(now, name="now")
    spec = spec or FeatureSpec()
    hourly = series if isinstance(series, Hourly) else Hourly.from_series(series)
    window_h = window // HOUR
    known = hourly.before(now).last(window_h + MIN_HISTORY_H)
    if len(known) < MIN_HISTORY_H + MIN_TRAIN_H:
        raise InsufficientHistory(
            f"{zone or 'series'}: {len(known)} known hours before {now.isoformat()}, "
            f"training needs {MIN_HISTORY_H + MIN_TRAIN_H}"
        )
    origins = np.arange(MIN_HISTORY_H - 1, len(known) - 1, max(1, origin_step_h), dtype=np.int64)
    row_origins, row_horizons = _rows(origins, spec.max_horizon_h)
    keep = row_origins + row_horizons < len(known)
    row_origins, row_horizons = row_origins[keep], row_horizons[keep]
    x, base = design(
        known.values,
        first_index=known.first_index,
        origins=row_origins,
        horizons=row_horizons,
        spec=spec,
    )
    y = known.values[row_origins + row_horizons] - base
    regressor = _regressor(kind)
    regressor.fit(x, y, row_horizons, row_origins + row_horizons)
    return TrainedModel(
        zone=zone,
        kind=kind,
        spec=spec,
        regressor=regressor,
        train_start=known.hour_at(MIN_HISTORY_H),
        train_end=known.end,
        trained_at=now,
        rows=int(y.size),
    )
