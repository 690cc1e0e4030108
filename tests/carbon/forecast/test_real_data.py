"""One check on real data: the shared Electricity Maps series (skipped when absent).

Spain, trained on June 2021 alone, tested on the next four weeks. A month is little data:
over the 40 zone-months of 2021 the month-trained model beats persistence at 24 h in
about 60 % of cases only (``benchmarks/carbon_forecast.py --short``); this case is one it
wins by a clear margin, so the test guards against regressions (a broken feature or fit),
not a claim that a month always suffices. The full-year figures are in the docs.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from carbon.forecast import Hourly, Persistence, train_zone
from carbon.replay import load_series
from tests.conftest import SHARED_DATA

EM_HOURLY = SHARED_DATA / "carbon" / "normalized" / "electricitymaps_hourly_2021_2022.csv"

pytestmark = pytest.mark.skipif(not EM_HOURLY.is_file(), reason="../shared data absent")


def test_a_month_of_spain_beats_persistence_at_24h() -> None:
    series = Hourly.from_series(load_series([EM_HOURLY])["ES"])
    start, now = datetime(2021, 6, 1, tzinfo=UTC), datetime(2021, 7, 1, tzinfo=UTC)
    model = train_zone(series, now=now, zone="ES", window=now - start)
    assert model.train_start == start and model.train_end == now
    first = series.position(now)
    origins = np.arange(first - 1, first - 1 + 28 * 24)
    actual = series.values[origins + 24]
    ours = model.predict_positions(series, origins=origins, hours=24)[:, 23]
    flat = Persistence().predict_positions(series, origins=origins, hours=24)[:, 23]
    ours_mae, flat_mae = np.abs(ours - actual).mean(), np.abs(flat - actual).mean()
    assert ours_mae < flat_mae, (ours_mae, flat_mae)
