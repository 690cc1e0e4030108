"""Tests for deferral: hand-calculated scenarios and a seeded randomized property check."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.deferral import (
    SiteOption,
    WindowChoice,
    offline_best,
    plan_window,
    run_window_gco2,
)
from broker.domain.enums import Tier

H = timedelta(hours=1)
NOW = datetime(2025, 1, 1, 10, tzinfo=UTC)


def _hourly(values: Sequence[float], *, first: datetime = NOW) -> list[tuple[datetime, float]]:
    return [(first + k * H, float(v)) for k, v in enumerate(values)]


def _option(
    values: Sequence[float], *, site: str = "a", energy: float = 1.0, first: datetime = NOW
) -> SiteOption:
    return SiteOption(
        site=site, pool_id=f"{site}-pool", energy_kwh=energy, hourly=_hourly(values, first=first)
    )


def _plan(
    options: Sequence[SiteOption],
    *,
    now: datetime = NOW,
    duration_s: int = 3600,
    deadline: datetime | None = NOW + 10 * H,
    tier: Tier = Tier.P2,
    min_saving: float = 0.05,
    margin_s: float = 0.0,
    step_s: int = 3600,
) -> WindowChoice:
    return plan_window(
        now=now,
        duration_s=duration_s,
        deadline=deadline,
        tier=tier,
        options=options,
        min_saving=min_saving,
        margin_s=margin_s,
        step_s=step_s,
    )


VALLEY = [300, 300, 300, 50, 300, 300, 300, 300, 300, 300]  # 13:00 is clean


# --- emissions of one window ---------------------------------------------------------------


def test_partial_hour_integration_by_hand() -> None:
    hourly = _hourly([100, 200, 400], first=NOW)  # 10:00, 11:00, 12:00
    # 3 kWh over 90 min = 2 kWh/h. From 10:30: 0.5 h x 2 x 100 + 1 h x 2 x 200 = 100 + 400.
    start = NOW + timedelta(minutes=30)
    gco2 = run_window_gco2(energy_kwh=3.0, start=start, duration_s=5400, hourly=hourly)
    assert gco2 == pytest.approx(500.0)
    # From 10:45: 0.25 x 2 x 100 + 1 x 2 x 200 + 0.25 x 2 x 400 = 50 + 400 + 200.
    start = NOW + timedelta(minutes=45)
    gco2 = run_window_gco2(energy_kwh=3.0, start=start, duration_s=5400, hourly=hourly)
    assert gco2 == pytest.approx(650.0)


def test_window_not_covered_is_none() -> None:
    hourly = _hourly([100, 200])
    assert run_window_gco2(energy_kwh=1, start=NOW + H, duration_s=7200, hourly=hourly) is None
    assert run_window_gco2(energy_kwh=1, start=NOW - H, duration_s=3600, hourly=hourly) is None
    holey = [(NOW, 100.0), (NOW + 2 * H, 100.0)]
    assert run_window_gco2(energy_kwh=1, start=NOW, duration_s=3 * 3600, hourly=holey) is None
    assert run_window_gco2(energy_kwh=2, start=NOW, duration_s=7200, hourly=hourly) == 300.0


def test_bad_series_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        run_window_gco2(
            energy_kwh=1, start=NOW, duration_s=60, hourly=[(NOW, 1.0), (NOW + H / 2, 1.0)]
        )
    with pytest.raises(ValueError, match="aware"):
        run_window_gco2(energy_kwh=1, start=NOW, duration_s=60, hourly=[(datetime(2025, 1, 1), 1)])
    with pytest.raises(ValueError, match="positive"):
        run_window_gco2(energy_kwh=1, start=NOW, duration_s=0, hourly=_hourly([1]))


# --- the rules --------------------------------------------------------------------------------


def test_defers_to_a_clean_valley_three_hours_ahead() -> None:
    choice = _plan([_option(VALLEY)])
    assert choice.defer
    assert choice.start_at == NOW + 3 * H
    assert (choice.gco2, choice.gco2_now) == (50.0, 300.0)
    assert choice.saving == pytest.approx(250 / 300)
    assert (choice.site, choice.pool_id) == ("a", "a-pool")


@pytest.mark.parametrize(
    ("deadline", "margin_s"),
    [
        (NOW + timedelta(hours=3, minutes=59), 0.0),  # the valley run would end at 14:00
        (NOW + 4 * H, 1.0),  # ends exactly at the deadline, but the margin pushes it over
    ],
)
def test_valley_past_the_deadline_runs_now(deadline: datetime, margin_s: float) -> None:
    choice = _plan([_option(VALLEY)], deadline=deadline, margin_s=margin_s)
    assert not choice.defer
    assert choice.start_at == NOW
    assert choice.gco2 == choice.gco2_now == 300.0


def test_valley_ending_exactly_at_deadline_with_margin_is_taken() -> None:
    choice = _plan([_option(VALLEY)], deadline=NOW + 4 * H + timedelta(minutes=10), margin_s=600)
    assert choice.defer
    assert choice.start_at == NOW + 3 * H


def test_saving_below_min_saving_runs_now() -> None:
    shallow = [300, 300, 300, 290, 300, 300]  # 3.3 % saving
    choice = _plan([_option(shallow)], min_saving=0.05)
    assert not choice.defer
    assert "below" in choice.reason
    assert _plan([_option(shallow)], min_saving=0.03).defer


def test_p1_is_never_deferred() -> None:
    choice = _plan([_option(VALLEY)], tier=Tier.P1)
    assert not choice.defer
    assert choice.start_at == NOW
    assert "P1" in choice.reason


def test_no_deadline_is_never_deferred() -> None:
    choice = _plan([_option(VALLEY)], deadline=None)
    assert not choice.defer
    assert "deadline" in choice.reason
    assert not offline_best(
        now=NOW, duration_s=3600, deadline=None, options=[_option(VALLEY)]
    ).defer


def test_cleanest_site_and_window_wins() -> None:
    # a: 1 kWh, 400 flat but 200 at 12:00 -> best 200 g. b: 2 kWh, 150 flat, 90 at 15:00 ->
    # now 300 g, best 180 g. The cleanest run now is b (300 < 400); overall b at 15:00.
    a = _option([400, 400, 200, 400, 400, 400, 400, 400], site="a", energy=1.0)
    b = _option([150, 150, 150, 150, 150, 90, 150, 150], site="b", energy=2.0)
    choice = _plan([a, b])
    assert choice.defer
    assert (choice.site, choice.start_at) == ("b", NOW + 5 * H)
    assert (choice.gco2, choice.gco2_now) == (180.0, 300.0)
    # Not deferring still picks the cleanest site for now.
    now_choice = _plan([a, b], tier=Tier.P1)
    assert (now_choice.site, now_choice.gco2) == ("b", 300.0)


def test_ties_go_to_the_earliest_start_then_the_first_option() -> None:
    twin = [300, 300, 100, 300, 300, 100, 300, 300]
    choice = _plan([_option(twin)])
    assert choice.start_at == NOW + 2 * H
    both = _plan([_option(twin, site="x"), _option(twin, site="y")])
    assert (both.site, both.start_at) == ("x", NOW + 2 * H)
    flat = _plan([_option([200] * 10)], min_saving=0.0)
    assert not flat.defer
    assert flat.start_at == NOW


def test_candidates_follow_hour_boundaries_and_step() -> None:
    # now 10:20: candidates 11:00, 12:00, ...; a valley at 12:00 is reachable.
    now = NOW + timedelta(minutes=20)
    values = [300, 300, 30, 300, 300, 300, 300, 300]
    choice = _plan([_option(values)], now=now)
    assert choice.start_at == NOW + 2 * H
    # With a 2-hour step from 11:00 the candidates are 11:00, 13:00, ...: the valley is missed.
    assert not _plan([_option(values)], now=now, step_s=7200).defer
    # Running now from 10:20 for an hour: 40 min at 300 + 20 min at 300.
    assert choice.gco2_now == pytest.approx(300.0)


def test_no_slack_runs_now_even_if_late() -> None:
    choice = _plan([_option(VALLEY)], deadline=NOW + timedelta(minutes=30))
    assert not choice.defer
    assert choice.start_at == NOW


def test_run_now_beyond_series_holds_the_last_value() -> None:
    # The job outlasts the series: running now is still priced (hold last value).
    choice = _plan([_option([100, 200])], duration_s=4 * 3600, deadline=NOW + 3 * H)
    assert not choice.defer
    assert choice.gco2_now == pytest.approx((100 + 200 + 200 + 200) / 4)


def test_later_start_outside_series_is_not_chosen() -> None:
    # The series ends at 13:00; a start at 13:00 would be unpriced, so it is skipped.
    choice = _plan([_option([300, 300, 300])], deadline=NOW + 10 * H, min_saving=0.0)
    assert not choice.defer


def test_offline_best_takes_any_saving() -> None:
    shallow = [300, 300, 300, 299, 300, 300]
    choice = offline_best(
        now=NOW, duration_s=3600, deadline=NOW + 6 * H, options=[_option(shallow)]
    )
    assert choice.defer
    assert choice.gco2 == 299.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="no site options"):
        _plan([])
    with pytest.raises(ValueError, match="non-empty"):
        _plan([_option([])])
    with pytest.raises(ValueError, match="naive"):
        _plan([_option(VALLEY)], now=datetime(2025, 1, 1, 10))
    with pytest.raises(ValueError, match=">= 0"):
        _plan([_option(VALLEY)], min_saving=-0.1)


# --- property: never late, never worse than now, and optimal among candidates ----------------


def test_randomized_choices_meet_deadline_and_never_lose() -> None:
    rng = random.Random(20250101)
    for _ in range(400):
        now = NOW + timedelta(minutes=rng.randrange(0, 60), seconds=rng.choice([0, 17]))
        first = now.replace(minute=0, second=0)
        duration_s = rng.randrange(300, 6 * 3600)
        deadline = None if rng.random() < 0.1 else now + timedelta(hours=rng.uniform(0, 30))
        margin_s = rng.choice([0.0, 300.0, 1800.0])
        step_s = rng.choice([1800, 3600, 7200])
        min_saving = rng.choice([0.0, 0.05, 0.2])
        tier = rng.choice(list(Tier))
        options = [
            _option(
                [rng.uniform(0, 500) for _ in range(rng.randrange(1, 36))],
                site=f"s{k}",
                energy=rng.uniform(0.1, 10),
                first=first,
            )
            for k in range(rng.randrange(1, 4))
        ]
        choice = _plan(
            options,
            now=now,
            duration_s=duration_s,
            deadline=deadline,
            tier=tier,
            min_saving=min_saving,
            margin_s=margin_s,
            step_s=step_s,
        )
        assert choice.gco2 <= choice.gco2_now
        if not choice.defer:
            assert (choice.start_at, choice.gco2) == (now, choice.gco2_now)
            continue
        assert tier is not Tier.P1
        assert deadline is not None
        assert now < choice.start_at
        assert choice.start_at + timedelta(seconds=duration_s + margin_s) <= deadline
        assert choice.gco2 <= choice.gco2_now * (1 - min_saving) + 1e-9
        option = next(o for o in options if o.site == choice.site)
        again = run_window_gco2(
            energy_kwh=option.energy_kwh,
            start=choice.start_at,
            duration_s=duration_s,
            hourly=option.hourly,
        )
        assert again == pytest.approx(choice.gco2)
        # Brute force: no feasible, priced candidate at any site is cleaner.
        start = first + H
        while start + timedelta(seconds=duration_s + margin_s) <= deadline:
            for o in options:
                g = run_window_gco2(
                    energy_kwh=o.energy_kwh, start=start, duration_s=duration_s, hourly=o.hourly
                )
                assert g is None or g >= choice.gco2 - 1e-6
            start += timedelta(seconds=step_s)
