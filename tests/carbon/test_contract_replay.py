"""The shared carbon-source contract, run against ReplaySource.

Once on a small CSV written here (always), once on the shared Electricity Maps file (skipped
when ../shared is absent, found the same way as SHARED_DATA in tests/conftest.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carbon.replay import ReplaySource
from tests.carbon.contract import SourceContract

REPO = Path(__file__).resolve().parents[2]
EM_HOURLY = (
    REPO.parent
    / "shared"
    / "data"
    / "carbon"
    / "normalized"
    / "electricitymaps_hourly_2021_2022.csv"
)
T0 = datetime(2021, 1, 1, tzinfo=UTC)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    """Two days of AA, hourly, 100 + the hour of day (never zero), one row flagged estimated."""
    rows = ["timestamp_utc,region,gco2_per_kwh,estimated"]
    for i in range(48):
        at = T0 + timedelta(hours=i)
        rows.append(f"{at:%Y-%m-%dT%H:%M:%SZ},AA,{100 + at.hour},{'true' if i == 7 else 'false'}")
    path = tmp_path / "aa.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


class TestReplaySmallCsvContract(SourceContract):
    @pytest.fixture
    def source_under_test(self, small_csv: Path) -> ReplaySource:
        return ReplaySource.from_csv(small_csv)

    @pytest.fixture
    def known_zone(self) -> str:
        return "AA"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "ZZ"

    @pytest.fixture
    def now(self) -> datetime:
        return T0 + timedelta(hours=5, minutes=30)


@pytest.fixture(scope="module")
def shared_source() -> ReplaySource:
    """The two-year file is loaded once for the whole class."""
    return ReplaySource.from_csv(EM_HOURLY)


@pytest.mark.skipif(not EM_HOURLY.is_file(), reason="../shared data absent")
class TestReplaySharedDataContract(SourceContract):
    @pytest.fixture
    def source_under_test(self, shared_source: ReplaySource) -> ReplaySource:
        return shared_source

    @pytest.fixture
    def known_zone(self) -> str:
        return "ES"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "XX-NOWHERE"

    @pytest.fixture
    def now(self) -> datetime:
        return datetime(2021, 6, 1, 12, 45, tzinfo=UTC)
