"""Tests for ReplaySource: loading, hour averaging, gap filling, time shift and wrap-around.

Small CSVs with hand-picked values are written per test; one test checks a real hour of the
shared Electricity Maps file against its raw line and skips when ../shared is absent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from carbon.base import CarbonSource
from carbon.replay import ReplaySource, load_series

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
EM_HOURLY = SHARED / "data" / "carbon" / "normalized" / "electricitymaps_hourly_2021_2022.csv"
H = timedelta(hours=1)
T0 = datetime(2021, 1, 1, tzinfo=UTC)


def _csv(tmp_path: Path, name: str, header: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def hourly_csv(tmp_path: Path) -> Path:
    """AA: 10, 20, 30, 40 at 00:00-03:00 with 02:00 flagged estimated by the data."""
    return _csv(
        tmp_path,
        "hourly.csv",
        "timestamp_utc,region,gco2_per_kwh,gco2_per_kwh_direct,estimated",
        [
            "2021-01-01T00:00:00Z,AA,10,5,false",
            "2021-01-01T01:00:00Z,AA,20,5,false",
            "2021-01-01T02:00:00Z,AA,30,5,true",
            "2021-01-01T03:00:00Z,AA,40,5,false",
        ],
    )


def test_satisfies_protocol(hourly_csv: Path) -> None:
    assert isinstance(ReplaySource.from_csv(hourly_csv), CarbonSource)


def test_sub_hourly_rows_are_averaged_into_the_hour(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "q.csv",
        "timestamp_utc,region,gco2_per_kwh",
        [
            "2020-01-01T00:00:00Z,DE,100",
            "2020-01-01T00:15:00Z,DE,110",
            "2020-01-01T00:30:00Z,DE,120",
            "2020-01-01T00:45:00Z,DE,130",
            "2020-01-01T01:00:00Z,DE,200",
            "2020-01-01T01:30:00Z,DE,300",
        ],
    )
    series = load_series([path])["DE"]
    assert series.first_hour == datetime(2020, 1, 1, tzinfo=UTC)
    assert list(series.values) == [115.0, 250.0]
    assert series.filled_hours == 0
    assert series.estimated == b"\x00\x00"


async def test_gap_is_carried_forward_and_marked_estimated(tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        "gap.csv",
        "timestamp_utc,region,gco2_per_kwh",
        [
            "2021-01-01T00:00:00Z,AA,10",
            "2021-01-01T01:00:00Z,AA,20",
            # 02:00 and 03:00 missing; 04:00 row with an empty value counts as missing too
            "2021-01-01T04:00:00Z,AA,",
            "2021-01-01T05:00:00Z,AA,60",
        ],
    )
    source = ReplaySource.from_csv(path)
    series = source.series_for("AA")
    assert series is not None
    assert list(series.values) == [10.0, 20.0, 20.0, 20.0, 20.0, 60.0]
    assert series.filled_hours == 3
    readings = await source.forecast("AA", start=T0, end=T0 + 6 * H)
    assert [r.estimated for r in readings] == [False, False, True, True, True, False]
    now = await source.current("AA", at=T0 + 3 * H + timedelta(minutes=10))
    assert now is not None
    assert (now.gco2_per_kwh, now.estimated, now.at) == (20.0, True, T0 + 3 * H)


async def test_estimated_column_is_carried(hourly_csv: Path) -> None:
    source = ReplaySource.from_csv(hourly_csv)
    readings = await source.forecast("AA", start=T0, end=T0 + 4 * H)
    assert [r.estimated for r in readings] == [False, False, True, False]


async def test_current_without_anchor_plays_recorded_dates(hourly_csv: Path) -> None:
    source = ReplaySource.from_csv(hourly_csv)
    reading = await source.current("AA", at=T0 + timedelta(hours=1, minutes=59))
    assert reading is not None
    assert reading.gco2_per_kwh == 20.0
    assert (reading.source, reading.forecast, reading.zone) == ("replay", False, "AA")
    assert reading.at == T0 + H
    # aware non-UTC input is converted: 03:30+02:00 is 01:30Z
    plus2 = timezone(timedelta(hours=2))
    reading = await source.current("AA", at=datetime(2021, 1, 1, 3, 30, tzinfo=plus2))
    assert reading is not None
    assert reading.gco2_per_kwh == 20.0
    # outside the series without wrap: no reading
    assert await source.current("AA", at=T0 - H) is None
    assert await source.current("AA", at=T0 + 4 * H) is None


@pytest.mark.parametrize(
    ("offset_h", "expected"),
    [
        (0, 10.0),
        (3, 40.0),
        (4, 10.0),  # 4 mod 4 = 0
        (9, 20.0),  # 9 mod 4 = 1
        (-1, 40.0),  # floor(-1) mod 4 = 3
        (-6, 30.0),  # -6 mod 4 = 2
        (1000, 10.0),  # 1000 mod 4 = 0
    ],
)
async def test_anchor_and_wrap_mapping(hourly_csv: Path, offset_h: int, expected: float) -> None:
    anchor = datetime(2030, 6, 1, 12, tzinfo=UTC)
    source = ReplaySource.from_csv(hourly_csv, anchor=anchor, wrap=True)
    at = anchor + offset_h * H + timedelta(minutes=30)
    reading = await source.current("AA", at=at)
    assert reading is not None
    assert reading.gco2_per_kwh == expected
    assert reading.at == anchor + offset_h * H


async def test_anchor_without_wrap_is_bounded(hourly_csv: Path) -> None:
    anchor = datetime(2030, 6, 1, tzinfo=UTC)
    source = ReplaySource.from_csv(hourly_csv, anchor=anchor)
    first = await source.current("AA", at=anchor)
    assert first is not None
    assert first.gco2_per_kwh == 10.0
    assert await source.current("AA", at=anchor - timedelta(seconds=1)) is None
    assert await source.current("AA", at=anchor + 4 * H) is None
    readings = await source.forecast("AA", start=anchor + 2 * H, end=anchor + 10 * H)
    assert [r.gco2_per_kwh for r in readings] == [30.0, 40.0]


def test_anchor_must_be_aware_and_on_the_hour(hourly_csv: Path) -> None:
    with pytest.raises(ValueError, match="whole UTC hour"):
        ReplaySource.from_csv(hourly_csv, anchor=datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        ReplaySource.from_csv(hourly_csv, anchor=datetime(2030, 1, 1))


async def test_forecast_is_perfect_foresight_hour_by_hour(hourly_csv: Path) -> None:
    anchor = datetime(2030, 1, 1, tzinfo=UTC)
    source = ReplaySource.from_csv(hourly_csv, anchor=anchor, wrap=True)
    start = anchor + timedelta(hours=2, minutes=15)
    readings = await source.forecast("AA", start=start, end=start + 6 * H)
    # hours 02:00 .. 08:00 overlap [02:15, 08:15): seven readings
    assert [r.at for r in readings] == [anchor + (2 + k) * H for k in range(7)]
    assert [r.gco2_per_kwh for r in readings] == [30.0, 40.0, 10.0, 20.0, 30.0, 40.0, 10.0]
    assert all(r.forecast and r.source == "replay" for r in readings)
    # forecast agrees with current, hour by hour
    for r in readings:
        now = await source.current("AA", at=r.at)
        assert now is not None
        assert now.gco2_per_kwh == r.gco2_per_kwh
    assert source.hourly("AA", start=anchor, end=anchor + 2 * H) == [
        (anchor, 10.0),
        (anchor + H, 20.0),
    ]
    assert await source.forecast("AA", start=start, end=start) == []


async def test_unknown_zone_and_aliases(hourly_csv: Path) -> None:
    source = ReplaySource.from_csv(hourly_csv, aliases={"SITE-ZONE": "AA"})
    assert await source.current("ZZ", at=T0) is None
    assert await source.forecast("ZZ", start=T0, end=T0 + 2 * H) == []
    reading = await source.current("SITE-ZONE", at=T0 + 3 * H)
    assert reading is not None
    assert (reading.zone, reading.gco2_per_kwh) == ("SITE-ZONE", 40.0)
    assert source.regions == frozenset({"AA"})
    with pytest.raises(ValueError, match="no series"):
        ReplaySource.from_csv(hourly_csv, aliases={"X": "MISSING"})


def test_several_files_and_regions(tmp_path: Path, hourly_csv: Path) -> None:
    other = _csv(
        tmp_path,
        "other.csv",
        "timestamp_utc,region,gco2_per_kwh",
        ["2021-01-01T04:00:00Z,AA,50", "2020-01-01T00:00:00Z,BB,7"],
    )
    series = load_series([hourly_csv, other])
    assert list(series["AA"].values) == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert list(series["BB"].values) == [7.0]


@pytest.mark.parametrize(
    ("header", "row", "match"),
    [
        ("time,region,gco2_per_kwh", "2021-01-01T00:00:00Z,AA,1", "expected columns"),
        ("timestamp_utc,region,gco2_per_kwh", "2021-01-01T00:00:00,AA,1", "naive"),
        ("timestamp_utc,region,gco2_per_kwh", "yesterday,AA,1", "bad timestamp"),
        ("timestamp_utc,region,gco2_per_kwh", "2021-01-01T00:00:00Z,AA,x", "bad intensity"),
        ("timestamp_utc,region,gco2_per_kwh", "2021-01-01T00:00:00Z,AA,-1", "out of range"),
        ("timestamp_utc,region,gco2_per_kwh", "2021-01-01T00:00:00Z,AA,nan", "out of range"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, header: str, row: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_series([_csv(tmp_path, "bad.csv", header, [row])])


def test_duplicate_rows_are_refused(tmp_path: Path, hourly_csv: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        load_series([hourly_csv, hourly_csv])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared data absent")
async def test_real_electricitymaps_hour_matches_raw_line() -> None:
    # Raw line: "2022-06-15T12:00:00Z,US-CAL-CISO,246.82,185.3,false"
    wanted = "2022-06-15T12:00:00Z,US-CAL-CISO,"
    with EM_HOURLY.open(encoding="utf-8") as fh:
        line = next(text for text in fh if text.startswith(wanted))
    expected = float(line.split(",")[2])
    assert expected == 246.82
    source = ReplaySource.from_csv(EM_HOURLY, aliases={"CISO": "US-CAL-CISO"})
    at = datetime(2022, 6, 15, 12, 40, tzinfo=UTC)
    reading = await source.current("CISO", at=at)
    assert reading is not None
    assert reading.gco2_per_kwh == expected
    assert reading.estimated is False
    series = source.series_for("US-CAL-CISO")
    assert series is not None
    assert len(series) == 2 * 8760
    assert series.filled_hours == 0
    assert source.regions == frozenset({"BR", "ES", "NO", "US-CAL-CISO"})
    # Shifted and looped: hour 0 of the series is played at the anchor, and again 2 years on.
    anchor = datetime(2031, 3, 1, tzinfo=UTC)
    looped = ReplaySource.from_csv(EM_HOURLY, anchor=anchor, wrap=True)
    hours = int((at - datetime(2021, 1, 1, tzinfo=UTC)) // H)
    for shift in (0, len(series)):
        again = await looped.current("US-CAL-CISO", at=anchor + (hours + shift) * H)
        assert again is not None
        assert again.gco2_per_kwh == expected
