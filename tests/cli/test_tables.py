"""The text views alone: alignment, numbers, times, hostile cells."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.cli import tables


def test_columns_are_padded_and_right_aligned_where_asked() -> None:
    text = tables.table(["NAME", "N"], [["a", 1], ["long-name", 12.5]], right=frozenset({1}))

    assert text.splitlines() == [
        "NAME          N",
        "a             1",
        "long-name  12.5",
    ]


def test_cells_cannot_break_the_columns_or_the_terminal() -> None:
    text = tables.table(["A", "B"], [["x\ny\x1b[31m", None]])

    assert text.splitlines() == ["A         B", "x y [31m  -"]


def test_numbers() -> None:
    assert [
        tables.num(4.0),
        tables.num(0.1429, digits=3),
        tables.num(30.08, digits=0),
        tables.num(None),
        tables.num(0.0),
    ] == ["4", "0.143", "30", "-", "0"]


def test_times_are_utc_and_ages_use_the_largest_unit() -> None:
    now = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)

    assert tables.when("2026-01-02T13:00:00+01:00") == "2026-01-02 12:00:00Z"
    assert [
        tables.age(t, now=now)
        for t in (
            "2026-01-02T11:59:18Z",
            "2026-01-02T11:55:00Z",
            "2026-01-02T09:00:00Z",
            "2025-12-30T12:00:00Z",
            "2026-01-02T12:00:05Z",
        )
    ] == ["42s", "5m", "3h", "3d", "0s"]


def test_an_event_line() -> None:
    event = {
        "at": "2026-01-02T12:00:00.5Z",
        "from_state": None,
        "to_state": "pending",
        "reason": "submitted",
        "detail": "",
    }

    assert tables.event_line(event) == "2026-01-02 12:00:00Z  - -> pending  submitted"
