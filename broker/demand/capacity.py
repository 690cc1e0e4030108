"""Forecast demand against private capacity: how many GPUs per model each hour must burst.

The burst planner reads one figure per (hour, GPU model): the forecast peak demand at a
chosen quantile minus the private GPUs of that model, floored at zero. Two rules:

* **Tiers add up.** Forecasts per (model, tier) are summed per model. A sum of p90s is the
  p90 of the sum only if the tiers peak together; otherwise it overstates it (and peaks at
  different minutes of the hour add up to more than the joint peak). For burst planning
  that errs on the safe side; forecast with `Grouping.MODEL` for the joint figure.
* **"Any model" takes what is left.** Demand that accepts any model (`ANY_MODEL`) first
  fills the spare private GPUs of every model in that hour; only the rest is a shortfall.
  Packing (fractions, gangs on whole nodes) is ignored, so the true shortfall can be higher.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from broker.demand.forecast import DemandForecast
from broker.demand.history import ANY_MODEL


@dataclass(frozen=True, slots=True, kw_only=True)
class Shortfall:
    """One hour and model: forecast demand at the quantile, the GPUs to meet it, the gap."""

    at: datetime
    gpu_model: str
    demand: float
    capacity: float  # for ANY_MODEL: the spare GPUs of every model that hour

    @property
    def shortfall(self) -> float:
        return max(0.0, self.demand - self.capacity)


def shortfalls(
    forecasts: Iterable[DemandForecast],
    capacity: Mapping[str, float],
    *,
    quantile: float = 0.9,
) -> list[Shortfall]:
    """Per hour and GPU model of `forecasts`, sorted by hour then model (any-model last).

    `capacity` is private GPUs per model; a model it lacks has none. Every hour and model the
    forecasts cover gets a row, zero shortfall included, so the planner sees the horizon.
    """
    demand: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for f in forecasts:
        demand[f.at][f.gpu_model] += f.quantile(quantile)
    out = []
    for at in sorted(demand):
        by_model = demand[at]
        spare = sum(
            max(0.0, gpus - by_model.get(model, 0.0))
            for model, gpus in capacity.items()
            if model != ANY_MODEL
        )
        for model in sorted(m for m in by_model if m != ANY_MODEL):
            out.append(
                Shortfall(
                    at=at,
                    gpu_model=model,
                    demand=by_model[model],
                    capacity=float(capacity.get(model, 0.0)),
                )
            )
        if ANY_MODEL in by_model:
            out.append(
                Shortfall(at=at, gpu_model=ANY_MODEL, demand=by_model[ANY_MODEL], capacity=spare)
            )
    return out
