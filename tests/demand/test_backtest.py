"""The rolling-origin backtest, on a synthetic series and on the real ITP trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from broker.demand.backtest import METHODS, MODEL, rolling_origin
from broker.demand.baseline import Naive, naive_quantiles
from broker.demand.forecast import ForecastConfig
from broker.demand.history import (
    HOUR,
    DemandTable,
    Grouping,
    Metric,
    SeriesKey,
    build_table,
)
from broker.domain.enums import Tier
from broker.simulation import convert
from broker.simulation.traces import records_from_trace

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEY = SeriesKey("H100", Tier.P2)
FAST = ForecastConfig(max_training_rows=5_000, horizon_hours=24)
ITP = (
    Path(__file__).resolve().parents[2].parent
    / "shared/data/traces/microsoft_itp_elasticflow/itp_raw_all_clusters.csv.gz"
)


def cycle_table(days: int) -> DemandTable:
    rng = np.random.default_rng(11)
    hours = np.arange(days * 24)
    y = np.maximum(50 + 40 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 5, hours.size), 0)
    return DemandTable(start=T0, hours=y.size, gpu_hours={KEY: y}, peak_gpus={KEY: y})


def test_scores_are_computed_from_each_origins_forecast() -> None:
    table = cycle_table(24)
    result = rolling_origin(table, train_hours=21 * 24, refit_every_hours=72, config=FAST)
    # the last origin is the last whose 24 hours are all in the table
    assert [o - T0 for o in result.origins] == [timedelta(days=d) for d in (21, 22, 23)]
    assert result.fits == 1 and result.naive_fallbacks == 0
    assert {(s.series, s.method) for s in result.scores} == {(KEY, m) for m in METHODS}
    # the naive rows, recomputed by hand from the same rule
    y = table.series(KEY, Metric.PEAK_GPUS)
    actual, p50, p90 = [], [], []
    for o in (21 * 24, 22 * 24, 23 * 24):
        q = naive_quantiles(y[:o], hours=24, quantiles=(0.5, 0.9), kind=Naive.WEEK)
        actual.append(y[o : o + 24])
        p50.append(q[:, 0])
        p90.append(q[:, 1])
    a, m, h = np.concatenate(actual), np.concatenate(p50), np.concatenate(p90)
    week = result.score(KEY, Naive.WEEK.value)
    assert week.hours == 72
    assert week.mae_p50 == pytest.approx(np.abs(a - m).mean())
    assert week.under_p90 == pytest.approx((a > h).mean())
    assert week.pinball_p90 == pytest.approx(np.mean(np.maximum(0.9 * (a - h), -0.1 * (a - h))))
    # on a strong daily cycle the model beats carrying the last hour forward
    assert result.score(KEY, MODEL).mae_p50 < 0.5 * result.score(KEY, Naive.LAST.value).mae_p50


@pytest.mark.skipif(not ITP.exists(), reason="shared trace data is not next to the repository")
def test_on_the_real_itp_trace() -> None:
    source = convert.read_itp(ITP)
    jobs = convert.convert(source, source="itp", seed=0).jobs
    records = records_from_trace(jobs, epoch=T0)
    table = build_table(records, start=T0, end=T0 + 42 * 24 * HOUR, grouping=Grouping.TOTAL)
    (key,) = table.keys
    # every GPU-hour submitted in the window is in the table (fractional P1 jobs included)
    in_window = [j for j in jobs if j.submit_s < 42 * 86_400]
    expected = sum(j.gpu_total * j.duration_s for j in in_window) / 3600
    assert table.series(key, Metric.GPU_HOURS).sum() == pytest.approx(expected)
    # an hour's peak is at least its average: GPU-hours run in the window ≤ sum of peaks
    ran = sum(
        j.gpu_total * (min(j.submit_s + j.duration_s, 42 * 86_400) - j.submit_s) for j in in_window
    )
    assert table.series(key, Metric.PEAK_GPUS).sum() >= ran / 3600
    result = rolling_origin(table, train_hours=28 * 24, refit_every_hours=7 * 24, config=FAST)
    model, week = result.score(key, MODEL), result.score(key, Naive.WEEK.value)
    assert len(result.origins) == 14 and result.naive_fallbacks == 0
    assert model.mae_p50 < week.mae_p50
    assert model.under_p90 < 0.25
