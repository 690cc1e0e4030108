"""Forecast demand against private capacity: the burst planner's shortfall per hour and model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.demand.capacity import shortfalls
from broker.demand.forecast import DemandForecast, ForecastMethod
from broker.demand.history import ANY_MODEL
from broker.domain.enums import Tier

T1 = datetime(2024, 1, 1, 10, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)


def fc(at: datetime, model: str, tier: Tier | None, p50: float, p90: float) -> DemandForecast:
    return DemandForecast(
        at=at,
        gpu_model=model,
        tier=tier,
        p50=p50,
        p90=p90,
        method=ForecastMethod.GBM_QUANTILE,
        levels=((0.5, p50), (0.9, p90)),
    )


FORECASTS = [
    fc(T1, "H100", Tier.P2, 8, 10),
    fc(T1, "H100", Tier.P3, 3, 5),
    fc(T1, "A100", Tier.P2, 1, 2),
    fc(T1, ANY_MODEL, Tier.P3, 4, 7),
    fc(T2, "H100", Tier.P2, 2, 4),
]
CAPACITY = {"H100": 12, "A100": 4, "L4": 3}


def test_tiers_add_up_per_model_and_any_model_uses_spare_gpus() -> None:
    rows = {(r.at, r.gpu_model): r for r in shortfalls(FORECASTS, CAPACITY)}
    assert list(rows) == [(T1, "A100"), (T1, "H100"), (T1, ANY_MODEL), (T2, "H100")]
    h100 = rows[T1, "H100"]
    assert (h100.demand, h100.capacity, h100.shortfall) == (15, 12, 3)  # p90s of P2 + P3
    assert rows[T1, "A100"].shortfall == 0  # 2 of 4
    # spare at T1: A100 4 - 2, L4 3, H100 none (over): 5 GPUs for 7 any-model GPUs
    anything = rows[T1, ANY_MODEL]
    assert (anything.capacity, anything.shortfall) == (5, 2)
    assert rows[T2, "H100"].shortfall == 0  # hours without a gap are still reported


def test_the_quantile_is_a_choice() -> None:
    rows = {(r.at, r.gpu_model): r for r in shortfalls(FORECASTS, CAPACITY, quantile=0.5)}
    assert rows[T1, "H100"].demand == 11 and rows[T1, "H100"].shortfall == 0
    # spare at the median: A100 4 - 1, L4 3, H100 12 - 11: 7 GPUs for 4 any-model GPUs
    assert (rows[T1, ANY_MODEL].capacity, rows[T1, ANY_MODEL].shortfall) == (7, 0)
    with pytest.raises(KeyError, match=r"0\.99"):
        shortfalls(FORECASTS, CAPACITY, quantile=0.99)


def test_a_model_without_private_capacity_bursts_all_of_it() -> None:
    (row,) = shortfalls([fc(T1, "B200", Tier.P2, 5, 9)], CAPACITY)
    assert (row.capacity, row.shortfall) == (0, 9)
