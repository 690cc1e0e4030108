"""The evaluation's scoring functions against hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from carbon.forecast.evaluation import captured_saving, mae, mape, shift_jobs, window_costs


def test_mae_and_mape_by_hand() -> None:
    assert mae([110, 90, 100], [100, 100, 100]) == pytest.approx(20 / 3)
    assert mape([110, 45], [100, 50]) == pytest.approx((10 + 10) / 2)
    with pytest.raises(ValueError, match="positive"):
        mape([1.0], [0.0])


def test_window_costs_sum_each_start() -> None:
    costs = window_costs([[4, 1, 1, 6, 2]], 2)
    np.testing.assert_array_equal(costs, [[5, 2, 7, 8]])


# One job, slack 3, duration 1: run-now costs 10, the oracle 1 (start 2).
ACTUAL = [[10.0, 5.0, 1.0, 8.0]]


def test_perfect_forecast_captures_everything() -> None:
    outcome = shift_jobs(actual=ACTUAL, forecast=ACTUAL, duration=1)
    assert captured_saving(outcome) == pytest.approx(100.0)
    assert outcome.start.tolist() == [2]


def test_flat_forecast_runs_now_and_captures_nothing() -> None:
    # Equal values must tie exactly (earliest start wins), for any value and duration.
    flat = np.full((1, 32), 123.456)
    for duration in (1, 4, 8):
        outcome = shift_jobs(
            actual=np.arange(32.0, 0.0, -1.0)[None, :], forecast=flat, duration=duration
        )
        assert outcome.start.tolist() == [0]
        assert captured_saving(outcome) == 0.0


def test_a_middle_case() -> None:
    # The forecast thinks hour 1 is best: actual 5, i.e. (10 - 5) / (10 - 1) of the saving.
    outcome = shift_jobs(actual=ACTUAL, forecast=[[9.0, 3.0, 4.0, 7.0]], duration=1)
    assert outcome.chosen.tolist() == [5.0]
    assert captured_saving(outcome) == pytest.approx(100 * 5 / 9)


def test_a_bad_forecast_is_negative() -> None:
    outcome = shift_jobs(actual=[[5.0, 10.0, 1.0]], forecast=[[3.0, 1.0, 2.0]], duration=1)
    assert captured_saving(outcome) == pytest.approx(100 * (5 - 10) / (5 - 1))


def test_longer_jobs_and_several_jobs_pool_before_dividing() -> None:
    # Job A (duration 2): windows 5, 2, 7, 8 -> run-now 5, oracle 2; forecast picks start 2
    # (actual 7). Job B: windows 9, 5, 9, 9 -> run-now 9, oracle 5; forecast picks start 1.
    actual = [[4.0, 1.0, 1.0, 6.0, 2.0], [4.0, 5.0, 0.0, 9.0, 0.0]]
    forecast = [[9.0, 9.0, 0.0, 0.0, 9.0], [9.0, 0.0, 0.0, 9.0, 9.0]]
    outcome = shift_jobs(actual=actual, forecast=forecast, duration=2)
    assert outcome.run_now.tolist() == [5.0, 9.0]
    assert outcome.oracle.tolist() == [2.0, 5.0]
    assert outcome.chosen.tolist() == [7.0, 5.0]
    assert captured_saving(outcome) == pytest.approx(100 * ((5 - 7) + (9 - 5)) / (3 + 4))


def test_nothing_to_save_is_nan() -> None:
    outcome = shift_jobs(actual=[[1.0, 2.0, 3.0]], forecast=[[3.0, 2.0, 1.0]], duration=1)
    assert math.isnan(captured_saving(outcome))


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shape"):
        shift_jobs(actual=[[1.0, 2.0]], forecast=[[1.0, 2.0, 3.0]], duration=1)
