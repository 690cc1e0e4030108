"""The observed-hours store behind the own forecaster: what it keeps, what it answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carbon.base import IntensityReading
from carbon.recorded import Observed, RecordedHistory, observed

T0 = datetime(2026, 12, 1, 0, tzinfo=UTC)
H = timedelta(hours=1)


def reading(hour: int, value: float, **flags: object) -> IntensityReading:
    fields: dict[str, object] = {"source": "electricitymaps"} | flags
    return IntensityReading(zone="DE", at=T0 + hour * H, gco2_per_kwh=value, **fields)  # type: ignore[arg-type]


def test_only_measured_hours_that_ended_are_observations() -> None:
    got = observed(
        [
            reading(0, 300),
            reading(1, 310, forecast=True),
            reading(2, 320, estimated=True),
            reading(3, 330, stale=True),
            reading(4, 340, source="broker-forecast"),
            reading(5, 350),  # still running at `before`
        ],
        before=T0 + 5.5 * H,
    )
    assert got == [Observed(zone="DE", hour=T0, gco2_per_kwh=300, source="electricitymaps")]


def test_hours_stay_sorted_later_values_replace_and_old_ones_go() -> None:
    history = RecordedHistory(keep=timedelta(hours=48))
    obs = [
        Observed(zone="DE", hour=T0 + h * H, gco2_per_kwh=float(h), source="em") for h in (3, 1, 2)
    ]
    assert history.add(obs) == 3
    history.add([Observed(zone="DE", hour=T0 + 2 * H, gco2_per_kwh=20.0, source="em")])
    assert history.hourly("DE", start=T0, end=T0 + 3 * H) == [(T0 + H, 1.0), (T0 + 2 * H, 20.0)]
    assert history.hourly("FR", start=T0, end=T0 + 9 * H) == []
    history.add([Observed(zone="DE", hour=T0 + 50 * H, gco2_per_kwh=5.0, source="em")])
    assert [h for h, _ in history.hourly("DE", start=T0, end=T0 + 60 * H)] == [
        T0 + 2 * H,
        T0 + 3 * H,
        T0 + 50 * H,
    ]
    assert history.hours("DE") == 3
