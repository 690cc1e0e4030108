"""The contract every carbon source keeps, run against each one through its fixtures.

A test module subclasses `SourceContract` and provides:

* ``source_under_test`` - the CarbonSource, ready to answer;
* ``known_zone`` / ``unknown_zone`` - a zone it has data for, and one it does not know;
* ``now`` - the instant the source takes as now (its clock), used as ``at`` for `current`;
* optionally ``window`` - a [start, end) the source has data for, every hour of it
  (default: the six hours from the hour containing ``now``).

The same tests then hold the static table, the replay, the live providers (against fake
servers) and the fallback chain to one behaviour, like libcloud's shared driver tests.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from carbon.base import CarbonSource, IntensityReading

H = timedelta(hours=1)


def hours_of(start: datetime, end: datetime) -> list[datetime]:
    """The UTC hour starts overlapping [start, end), in order."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour < end:
        out.append(hour)
        hour += H
    return out


def check_reading(reading: IntensityReading, *, zone: str) -> None:
    """What every reading promises: its zone, a UTC instant, a real positive value, a source."""
    assert reading.zone == zone
    assert reading.at.tzinfo is not None, "naive timestamp"
    assert reading.at.utcoffset() == timedelta(0), f"{reading.at} is not UTC"
    assert isinstance(reading.gco2_per_kwh, float | int)
    assert not math.isnan(reading.gco2_per_kwh), "NaN intensity"
    assert math.isfinite(reading.gco2_per_kwh) and reading.gco2_per_kwh > 0
    assert isinstance(reading.source, str) and reading.source


class SourceContract:
    @pytest.fixture
    def window(self, now: datetime) -> tuple[datetime, datetime]:
        start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return start, start + 6 * H

    def test_is_a_carbon_source(self, source_under_test: CarbonSource) -> None:
        assert isinstance(source_under_test, CarbonSource)
        assert isinstance(source_under_test.name, str) and source_under_test.name

    async def test_current_reads_the_known_zone(
        self, source_under_test: CarbonSource, known_zone: str, now: datetime
    ) -> None:
        reading = await source_under_test.current(known_zone, at=now)
        assert reading is not None
        check_reading(reading, zone=known_zone)
        assert reading.at <= now + H, "a current reading from a later hour"

    async def test_current_takes_any_timezone_and_answers_in_utc(
        self, source_under_test: CarbonSource, known_zone: str, now: datetime
    ) -> None:
        elsewhere = now.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
        in_utc = await source_under_test.current(known_zone, at=now)
        shifted = await source_under_test.current(known_zone, at=elsewhere)
        assert in_utc is not None and shifted is not None
        check_reading(shifted, zone=known_zone)
        assert (shifted.at, shifted.gco2_per_kwh) == (in_utc.at, in_utc.gco2_per_kwh)

    async def test_current_of_an_unknown_zone_is_none(
        self, source_under_test: CarbonSource, unknown_zone: str, now: datetime
    ) -> None:
        assert await source_under_test.current(unknown_zone, at=now) is None

    async def test_forecast_of_an_unknown_zone_is_empty(
        self,
        source_under_test: CarbonSource,
        unknown_zone: str,
        window: tuple[datetime, datetime],
    ) -> None:
        start, end = window
        assert await source_under_test.forecast(unknown_zone, start=start, end=end) == []

    async def test_forecast_is_hourly_utc_and_covers_the_window(
        self,
        source_under_test: CarbonSource,
        known_zone: str,
        now: datetime,
        window: tuple[datetime, datetime],
    ) -> None:
        start, end = window
        readings = await source_under_test.forecast(known_zone, start=start, end=end)
        stamps = [r.at for r in readings]
        assert stamps == hours_of(start, end), "not exactly one reading per hour of the window"
        assert all(a < b for a, b in itertools.pairwise(stamps))
        for reading in readings:
            check_reading(reading, zone=known_zone)
            assert (reading.at.minute, reading.at.second, reading.at.microsecond) == (0, 0, 0)
            if reading.at > now:
                assert reading.forecast, f"the future hour {reading.at} is not marked forecast"

    async def test_forecast_starts_with_the_hour_containing_start(
        self,
        source_under_test: CarbonSource,
        known_zone: str,
        window: tuple[datetime, datetime],
    ) -> None:
        start = window[0] + timedelta(minutes=20)
        end = start + 2 * H
        readings = await source_under_test.forecast(known_zone, start=start, end=end)
        assert [r.at for r in readings] == hours_of(start, end)
        assert len(readings) == 3

    async def test_an_empty_or_inverted_window_is_empty(
        self,
        source_under_test: CarbonSource,
        known_zone: str,
        window: tuple[datetime, datetime],
    ) -> None:
        start, _ = window
        assert await source_under_test.forecast(known_zone, start=start, end=start) == []
        assert await source_under_test.forecast(known_zone, start=start, end=start - H) == []

    async def test_naive_datetimes_are_refused(
        self, source_under_test: CarbonSource, known_zone: str, now: datetime
    ) -> None:
        naive = now.replace(tzinfo=None)
        with pytest.raises(ValueError, match="timezone-aware"):
            await source_under_test.current(known_zone, at=naive)
        with pytest.raises(ValueError, match="timezone-aware"):
            await source_under_test.forecast(known_zone, start=naive, end=naive + H)
