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


WAITING = {
    "type": "Waiting",
    "reason": "QuotaCapReached",
    "message": "tenant a holds 2 GPUs of P2 (nominal 2, cap 2); 2 more would exceed its cap of 2",
    "since": "2026-11-23T16:09:21Z",
}


def test_the_state_cell_and_the_why_line_show_the_condition() -> None:
    assert tables.state_cell({"state": "pending", "condition": WAITING}) == (
        "pending (QuotaCapReached)"
    )
    assert tables.state_cell({"state": "running", "condition": None}) == "running"
    assert tables.condition_line(WAITING) == (
        "Waiting QuotaCapReached since 2026-11-23 16:09:21Z: " + WAITING["message"]
    )
    assert tables.condition_line(None) == "-"


def test_a_job_explanation() -> None:
    data = {
        "job_id": "job-1",
        "state": "pending",
        "evaluated_at": "2026-11-23T16:09:21Z",
        "outcome": "place",
        "reason": None,
        "message": "site s, pool s/H100-0",
        "site": "s",
        "pool_id": "s/H100-0",
        "deferred_until": None,
        "deferral": "P1 is never deferred",
        "borrowed": False,
        "quota": {
            "allowed": True,
            "borrowed": False,
            "reason": "tenant a holds 0 GPUs of P1 (nominal 8, no cap); 8 more fit in quota",
            "code": None,
            "nominal": 8,
            "cap": None,
            "used": 0,
            "free": None,
            "reserved": None,
            "unreserved": None,
        },
        "standing": {
            "position": 2,
            "queue_length": 5,
            "ahead_same_tier": 1,
            "tenant_share": 0.125,
        },
        "preemption": "preempting 1 job(s)",
        "victims": [
            {
                "job_id": None,
                "tenant": None,
                "tier": "P3",
                "gpus": 8,
                "gpu_seconds_lost": 28800,
                "borrowed": False,
            }
        ],
    }
    text = tables.job_explanation(data)
    assert "NOW          place on s (s/H100-0)" in text
    assert "QUEUE        2 of 5 (1 of its tier ahead; tenant share 12.5%)" in text
    assert "QUOTA        used 0, nominal 8, cap -" in text
    assert "CAPACITY" not in text  # a user's view: no free-GPU figures
    assert "(another tenant's)" in text and "28800" in text
