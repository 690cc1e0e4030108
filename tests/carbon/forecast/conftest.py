"""Shared synthetic series for the forecaster tests: a strong daily cycle plus seeded noise."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from numpy.typing import NDArray

from carbon.forecast import Hourly

T0 = datetime(2021, 3, 1, tzinfo=UTC)  # a Monday, 00:00 UTC
LEVEL = 200.0
AMPLITUDE = 80.0
NOISE = 8.0


def daily_cycle(n: int) -> NDArray[np.float64]:
    """The noise-free signal from T0: peak at 06:00 UTC, trough at 18:00."""
    hod = np.arange(n) % 24
    return LEVEL + AMPLITUDE * np.cos(2 * np.pi * (hod - 6) / 24)


def synthetic(days: int, *, seed: int = 7, noise: float = NOISE) -> Hourly:
    """`days` days from T0 of the daily cycle plus Gaussian noise (seeded)."""
    n = days * 24
    rng = np.random.default_rng(seed)
    return Hourly(first_hour=T0, values=daily_cycle(n) + rng.normal(0.0, noise, n))


@pytest.fixture
def six_weeks() -> Hourly:
    return synthetic(42)
