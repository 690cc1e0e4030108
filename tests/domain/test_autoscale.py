"""The autoscaler: Knative's stable and panic modes, delays, zero, activation, forecasts, floors."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from broker.domain.autoscale import (
    Floor,
    ForecastPoint,
    LoadMetric,
    LoadSample,
    ScaleDecision,
    ScaleMode,
    ScalerState,
    ScalingPolicy,
    decide,
    replicas_for,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
S = timedelta(seconds=1)
# target 10 at utilisation 1: the figures stay round; no delay unless a test wants one
PLAIN = ScalingPolicy(
    min_replicas=0,
    max_replicas=1000,
    target_per_replica=10,
    target_utilisation=1.0,
    scale_down_delay_s=0,
)


def steady(value: float, *, until: datetime = NOW, span_s: int = 120) -> list[LoadSample]:
    """One sample a second over the `span_s` seconds ending at `until`."""
    return [LoadSample(until - k * S, value) for k in range(span_s - 1, -1, -1)]


def once(
    samples: Sequence[LoadSample],
    *,
    policy: ScalingPolicy = PLAIN,
    ready: int = 10,
    current: int | None = None,
    now: datetime = NOW,
    state: ScalerState | None = None,
    **extra: object,
) -> ScaleDecision:
    return decide(
        policy=policy,
        samples=samples,
        ready=ready,
        current=ready if current is None else current,
        now=now,
        state=state or ScalerState(),
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class Service:
    """Ticks the autoscaler every `tick_s` over a load function; replicas start at once."""

    policy: ScalingPolicy = PLAIN
    replicas: int = 10
    now: datetime = NOW
    tick_s: int = 2
    state: ScalerState = field(default_factory=ScalerState)
    samples: list[LoadSample] = field(default_factory=list)
    decisions: list[tuple[datetime, ScaleDecision]] = field(default_factory=list)

    def run(
        self, seconds: int, load: Callable[[datetime], float | None], **extra: object
    ) -> ScaleDecision:
        decision = None
        for _ in range(seconds // self.tick_s):
            for k in range(self.tick_s):
                at = self.now + (k + 1) * S
                value = load(at)
                if value is not None:  # None: the metrics pipeline lost this second
                    self.samples.append(LoadSample(at, value))
            self.now += self.tick_s * S
            self.samples = [s for s in self.samples if s.at > self.now - 120 * S]
            decision = decide(
                policy=self.policy,
                samples=self.samples,
                ready=self.replicas,
                current=self.replicas,
                now=self.now,
                state=self.state,
                **extra,  # type: ignore[arg-type]
            )
            self.state, self.replicas = decision.state, decision.desired
            self.decisions.append((self.now, decision))
        assert decision is not None
        return decision


# --- reactive: stable mode --------------------------------------------------------------


def test_steady_load_wants_load_over_target_with_the_figures_in_the_reason() -> None:
    policy = ScalingPolicy(max_replicas=100, target_per_replica=10, target_utilisation=0.7)
    decision = once(steady(100), policy=policy, ready=15)
    assert (decision.desired, decision.mode) == (15, ScaleMode.STABLE)  # ceil(100 / 7)
    assert "load 100 rps over 60 s / 10 per replica at 0.7 → 15" in decision.reason
    assert decision.stable_load == pytest.approx(100)


def test_exact_multiples_do_not_round_up_and_concurrency_names_its_unit() -> None:
    policy = ScalingPolicy(max_replicas=100, metric=LoadMetric.CONCURRENCY, target_per_replica=0.1)
    assert replicas_for(0.7, policy=policy) == 10  # 0.7 / 0.07 is 10.000000000000002
    decision = once(steady(0.7), policy=policy)
    assert decision.desired == 10 and "in flight" in decision.reason


def test_a_steady_service_stays_where_it_is_tick_after_tick() -> None:
    service = Service(replicas=10)
    service.run(300, lambda _: 100.0)
    assert {d.desired for _, d in service.decisions} == {10}
    assert {d.mode for _, d in service.decisions} == {ScaleMode.STABLE}


def test_irregular_samples_are_weighted_by_the_time_they_cover() -> None:
    samples = [
        LoadSample(NOW - 70 * S, 100),  # before the window: bounds the next sample's span
        LoadSample(NOW - 10 * S, 100),  # covers the 50 s of the window up to it
        LoadSample(NOW, 400),  # covers the last 10 s
    ]
    decision = once(samples, ready=25)  # the panic window's 400 → 40 is under 2 × 25
    # (50 × 100 + 10 × 400) / 60 = 150 → 15; an unweighted mean would say 250 → 25
    assert decision.stable_load == pytest.approx(150)
    assert decision.desired == 15


# --- reactive: panic mode ---------------------------------------------------------------


def rise(at: datetime, *, before: float, after: float) -> Callable[[datetime], float]:
    return lambda t: after if t > at else before


def test_a_step_rise_panics_within_the_panic_window_and_scales_up_at_once() -> None:
    service = Service(replicas=10)
    service.run(120, lambda _: 100.0)
    step = service.now
    decision = service.run(6, rise(step, before=100, after=400))
    panics = [(t, d) for t, d in service.decisions if d.mode is ScaleMode.PANIC]
    assert panics, "never panicked"
    first_at, first = panics[0]
    assert first_at - step <= 6 * S
    # the stable window alone would want ceil(((58 × 100) + (2 × 400)) / 60 / 10) = 11
    assert first.desired >= 20 and "panic since" in first.reason
    assert decision.desired >= 30  # within 6 s, most of the way to the 40 it needs
    service.run(10, rise(step, before=100, after=400))
    assert service.replicas == 40


def test_no_panic_below_twice_the_ready_replicas() -> None:
    service = Service(replicas=10)
    service.run(120, lambda _: 100.0)
    service.run(60, rise(service.now, before=100, after=190))  # 19 < 2 × 10
    assert all(d.mode is ScaleMode.STABLE for _, d in service.decisions)
    assert service.replicas == 19


def test_no_scale_down_in_panic_and_panic_ends_a_stable_window_after_the_burst() -> None:
    service = Service(replicas=10)
    service.run(120, lambda _: 100.0)
    burst = service.now
    service.run(10, rise(burst, before=100, after=400))
    peak = service.replicas
    assert peak == 40
    end = service.now  # the load falls back to 100; ready is 40, so no longer over 2×
    service.run(40, lambda _: 100.0)
    held = [d for t, d in service.decisions if t > end]
    assert all(d.mode is ScaleMode.PANIC and d.desired == peak for d in held)
    assert "no scale-down in panic" in held[-1].reason
    service.run(60, lambda _: 100.0)
    after = [(t, d) for t, d in service.decisions if d.mode is ScaleMode.STABLE and t > end]
    assert after, "panic never ended"
    exit_at = after[0][0]
    before_exit = [d for t, d in service.decisions if t < exit_at][-1]
    last_over = before_exit.state.panic_last_over
    assert last_over is not None
    assert exit_at - last_over > PLAIN.stable_window_s * S >= exit_at - 2 * S - last_over
    assert "panic over" in after[0][1].reason
    assert after[0][1].desired == 20  # down, but at most 2× a tick (40 → 20)


def test_panic_counts_zero_ready_as_one_as_knative_does() -> None:
    decision = once(steady(50), ready=0, current=3)
    assert decision.mode is ScaleMode.PANIC and decision.desired == 5


# --- scale-down rate and delay ----------------------------------------------------------


def test_scale_down_is_limited_to_half_the_ready_replicas_a_tick() -> None:
    decision = once(steady(10), ready=20)
    assert decision.desired == 10  # wants 1, floor(20 / 2) = 10
    assert "scale-down rate-limited to 10 from 20 ready" in decision.reason


def test_scale_up_rate_bounds_growth_against_ready() -> None:
    policy = ScalingPolicy(
        max_replicas=1000,
        target_per_replica=10,
        target_utilisation=1.0,
        max_scale_up_rate=1.5,
        scale_down_delay_s=0,
    )
    decision = once(steady(1000), policy=policy, ready=50)
    # in panic (100 ≥ 2 × 50), and still at most ceil(1.5 × 50) = 75
    assert decision.desired == 75


def test_the_scale_down_delay_keeps_the_highest_recommendation_of_the_window() -> None:
    policy = ScalingPolicy(
        max_replicas=100, target_per_replica=10, target_utilisation=1.0, scale_down_delay_s=60
    )
    service = Service(policy=policy, replicas=10)
    service.run(120, lambda _: 100.0)
    drop = service.now
    service.run(56, lambda _: 60.0)  # wants 6 once the stable window sees only 60
    assert service.replicas == 10
    assert "scale-down delayed: keeping 10" in service.decisions[-1][1].reason
    service.run(70, lambda _: 60.0)
    assert service.replicas == 6
    went = min(t for t, d in service.decisions if t > drop and d.desired == 6)
    assert went - drop >= 60 * S  # never before the delay has passed


def test_without_a_delay_the_same_drop_acts_within_the_stable_window() -> None:
    service = Service(replicas=10)
    service.run(120, lambda _: 100.0)
    service.run(60, lambda _: 60.0)
    assert service.replicas == 6


# --- bounds -----------------------------------------------------------------------------


def test_max_replicas_clamps_and_says_so() -> None:
    policy = ScalingPolicy(max_replicas=8, target_per_replica=10, target_utilisation=1.0)
    decision = once(steady(1000), policy=policy, ready=8)
    assert (decision.desired, decision.mode) == (8, ScaleMode.BOUNDS)
    assert "outside [0, 8]" in decision.reason


def test_min_replicas_holds_a_floor_with_no_load() -> None:
    policy = ScalingPolicy(
        min_replicas=2, max_replicas=8, target_per_replica=10, scale_down_delay_s=0
    )
    decision = once(steady(0), policy=policy, ready=2)
    assert (decision.desired, decision.mode) == (2, ScaleMode.BOUNDS)


def test_policy_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="max_replicas"):
        ScalingPolicy(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="max_replicas"):
        ScalingPolicy(min_replicas=0, max_replicas=0)
    with pytest.raises(ValueError, match="min_replicas"):
        ScalingPolicy(min_replicas=-1)
    with pytest.raises(ValueError, match="target_per_replica"):
        ScalingPolicy(target_per_replica=0)
    with pytest.raises(ValueError, match="windows"):
        ScalingPolicy(panic_window_s=90)
    with pytest.raises(ValueError, match="exceed 1"):
        ScalingPolicy(max_scale_down_rate=1)


def test_decide_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone"):
        once(steady(1), now=NOW.replace(tzinfo=None))


# --- missing data -----------------------------------------------------------------------


def test_missing_data_keeps_the_current_count_and_says_so() -> None:
    stale = steady(1000, until=NOW - 61 * S)
    decision = once(stale, ready=5, current=7)
    assert (decision.desired, decision.mode) == (7, ScaleMode.STABLE)
    assert "no load samples in the last 60 s: keeping 7" in decision.reason
    assert decision.stable_load is None


def test_missing_data_never_scales_to_zero() -> None:
    policy = ScalingPolicy(max_replicas=10, target_per_replica=10, scale_to_zero_after_s=60)
    service = Service(policy=policy, replicas=1)
    service.run(3600, lambda _: None)  # an hour without a single sample
    assert service.replicas == 1
    assert all(d.desired == 1 for _, d in service.decisions)


# --- scale to zero and activation -------------------------------------------------------

ZEROABLE = ScalingPolicy(
    max_replicas=10, target_per_replica=10, scale_down_delay_s=0, scale_to_zero_after_s=300
)


def test_scale_to_zero_only_after_the_idle_period() -> None:
    service = Service(policy=ZEROABLE, replicas=1)
    service.run(60, lambda _: 5.0)
    quiet = service.now
    service.run(400, lambda _: 0.0)
    zero_at = min(t for t, d in service.decisions if d.desired == 0)
    assert zero_at - quiet >= 300 * S
    assert zero_at - quiet <= 304 * S  # and not much later: idle counts from the first zero
    last_one = [d for t, d in service.decisions if t < zero_at][-1]
    assert last_one.desired == 1 and "before scale to zero: keeping 1" in last_one.reason
    gone = next(d for t, d in service.decisions if t == zero_at)
    assert gone.mode is ScaleMode.ZERO and "scale to zero" in gone.reason
    assert service.decisions[-1][1].reason.startswith("load 0 rps")
    assert "staying at zero" in service.decisions[-1][1].reason


def test_a_gap_in_the_data_restarts_the_idle_period() -> None:
    service = Service(policy=ZEROABLE, replicas=1)
    quiet = service.now
    service.run(200, lambda _: 0.0)
    service.run(90, lambda _: None)  # 90 s without samples: idleness unproven
    back = service.now
    service.run(310, lambda _: 0.0)
    zero_at = min(t for t, d in service.decisions if d.desired == 0)
    assert zero_at - back >= 300 * S  # counted from the first sample after the gap
    assert zero_at - quiet > 500 * S


def test_the_idle_period_ends_the_scale_down_delay_s_hold() -> None:
    # Eight replicas busy, then nothing: the delay (10 min) holds the eight through the
    # lull, but the idle period (2 min) ends the hold: zero, not eight for 10 minutes.
    delayed = ScalingPolicy(
        max_replicas=10, target_per_replica=10, scale_down_delay_s=600, scale_to_zero_after_s=120
    )
    service = Service(policy=delayed, replicas=5)
    service.run(120, lambda _: 50.0)
    quiet = service.now
    service.run(400, lambda _: 0.0)
    lull = [d.desired for t, d in service.decisions if quiet < t < quiet + 118 * S]
    assert set(lull) == {8}  # 50 rps / (10 × 0.7): held by the delay
    zero_at = min(t for t, d in service.decisions if t > quiet and d.desired == 0)
    assert 120 * S <= zero_at - quiet <= 124 * S
    warm = Service(policy=replace(delayed, min_replicas=1), replicas=5)
    warm.run(120, lambda _: 50.0)
    warm.run(400, lambda _: 0.0)
    assert {d.desired for _, d in warm.decisions} == {8}  # min 1: the delay rules


def test_an_idle_period_of_none_is_the_start_up_time_and_at_least_30_s() -> None:
    assert ScalingPolicy().scale_to_zero_after_s == 300.0
    policy = ScalingPolicy(max_replicas=10, target_per_replica=10, scale_to_zero_after_s=None)
    assert policy.idle_period_s(90.0) == 90.0
    assert policy.idle_period_s(5.0) == 30.0
    service = Service(policy=policy, replicas=1)
    service.run(60, lambda _: 5.0)
    quiet = service.now
    service.run(200, lambda _: 0.0, startup_s=90.0)
    zero_at = min(t for t, d in service.decisions if d.desired == 0)
    assert 90 * S <= zero_at - quiet <= 94 * S
    assert "(the start-up time)" in next(d for t, d in service.decisions if t == zero_at).reason


def test_a_forecast_of_load_keeps_an_idle_service_warm() -> None:
    service = Service(policy=ZEROABLE, replicas=1)
    service.run(60, lambda _: 5.0)
    coming = [ForecastPoint(NOW + k * 60 * S, 5.0) for k in range(1, 30)]
    service.run(600, lambda _: 0.0, forecast=coming, startup_s=60.0)
    assert all(d.desired == 1 for _, d in service.decisions)
    assert service.decisions[-1][1].mode is ScaleMode.PREDICTIVE


def test_min_replicas_above_zero_never_goes_to_zero() -> None:
    policy = ScalingPolicy(
        min_replicas=1, max_replicas=10, target_per_replica=10, scale_to_zero_after_s=0
    )
    service = Service(policy=policy, replicas=1)
    service.run(600, lambda _: 0.0)
    assert all(d.desired == 1 for _, d in service.decisions)


def test_activation_wakes_a_replica_for_waiting_requests_at_zero() -> None:
    decision = once([], policy=ZEROABLE, ready=0, current=0, waiting_requests=3)
    assert (decision.desired, decision.mode) == (1, ScaleMode.ACTIVATION)
    assert "3 requests waiting" in decision.reason


def test_activation_on_load_at_zero_takes_what_the_load_needs() -> None:
    small = once(steady(0.5, span_s=2), policy=ZEROABLE, ready=0, current=0)
    assert (small.desired, small.mode) == (1, ScaleMode.ACTIVATION)
    assert "activation at zero replicas (load seen)" in small.reason
    burst = once(steady(60, span_s=2), policy=ZEROABLE, ready=0, current=0)
    assert burst.mode is ScaleMode.ACTIVATION and burst.desired == 9  # ceil(60 / 7)


def test_at_zero_without_load_it_stays_at_zero() -> None:
    decision = once(steady(0), policy=ZEROABLE, ready=0, current=0)
    assert (decision.desired, decision.mode) == (0, ScaleMode.ZERO)


def test_activation_resets_idleness() -> None:
    service = Service(policy=ZEROABLE, replicas=1)
    service.run(250, lambda _: 0.0)
    service.run(2, lambda _: 0.0, waiting_requests=2)
    assert service.state.idle_since is None


# --- floors from signals ----------------------------------------------------------------


def test_a_floor_applies_from_startup_before_its_start_until_its_end() -> None:
    floor = Floor(start=NOW + 120 * S, until=NOW + 3600 * S, replicas=15, label="campaign")

    def at(offset_s: int) -> ScaleDecision:
        now = NOW + offset_s * S
        return once(steady(20, until=now), ready=2, now=now, floors=[floor], startup_s=90)

    assert at(29).desired == 2  # 91 s before the start: too early
    early = at(30)  # start-up (90 s) before the start
    assert (early.desired, early.mode) == (15, ScaleMode.FLOOR)
    assert "floor 15 until 13:00 from signal 'campaign'" in early.reason
    assert "raised 90 s ahead" in early.reason
    assert at(3600).desired == 15 and at(3601).desired == 2


def test_the_highest_floor_in_force_wins_and_load_above_it_rules() -> None:
    floors = [
        Floor(start=NOW, until=NOW + 60 * S, replicas=4),
        Floor(start=NOW, until=NOW + 60 * S, replicas=6, label="b"),
    ]
    assert once(steady(20), ready=2, floors=floors).desired == 6
    busy = once(steady(90), ready=9, floors=floors)
    assert (busy.desired, busy.mode) == (9, ScaleMode.STABLE)


# --- predictive -------------------------------------------------------------------------


def test_forecast_scales_up_at_least_startup_ahead_of_the_rise() -> None:
    rise_at = NOW + 600 * S
    forecast = [ForecastPoint(NOW + k * 60 * S, 100.0 if k < 10 else 500.0) for k in range(20)]
    startup = 120.0

    def at(offset_s: int) -> ScaleDecision:
        now = NOW + offset_s * S
        return once(steady(100, until=now), ready=10, now=now, forecast=forecast, startup_s=startup)

    first = next(t for t in range(0, 600, 2) if at(t).desired > 10)
    assert rise_at - (NOW + first * S) >= timedelta(seconds=startup)
    # the window is start-up + the 60 s margin
    assert first == 600 - 180
    decision = at(first)
    assert (decision.desired, decision.mode) == (50, ScaleMode.PREDICTIVE)
    assert "forecast 500 rps at 12:10:00" in decision.reason


def test_a_forecast_asks_at_the_full_target_its_quantile_being_the_headroom() -> None:
    policy = ScalingPolicy(max_replicas=100, target_per_replica=10, target_utilisation=0.7)
    coming = [ForecastPoint(NOW + k * 60 * S, 100.0) for k in range(1, 4)]
    decision = once(steady(50), policy=policy, ready=8, forecast=coming, startup_s=60)
    # reactive: ceil(50 / 7) = 8; the forecast: 100 / 10 = 10, not ceil(100 / 7) = 15
    assert (decision.desired, decision.mode) == (10, ScaleMode.PREDICTIVE)
    assert "/ 10 per replica → 10" in decision.reason


def test_a_forecast_of_next_to_nothing_keeps_no_replica_for_an_idle_service() -> None:
    service = Service(policy=ZEROABLE, replicas=1)
    service.run(60, lambda _: 5.0)
    crumbs = [ForecastPoint(NOW + k * 60 * S, 0.05) for k in range(1, 30)]  # 0.5 % of one
    service.run(600, lambda _: 0.0, forecast=crumbs, startup_s=60.0)
    assert service.replicas == 0


def test_forecast_never_lowers_the_reactive_count() -> None:
    low = [ForecastPoint(NOW + k * 60 * S, 0.0) for k in range(10)]
    decision = once(steady(100), ready=10, forecast=low, startup_s=60)
    assert (decision.desired, decision.mode) == (10, ScaleMode.STABLE)


def test_forecast_points_in_the_past_are_ignored() -> None:
    old = [ForecastPoint(NOW - 60 * S, 10_000.0)]
    assert once(steady(100), ready=10, forecast=old).desired == 10


# --- properties -------------------------------------------------------------------------


def test_property_desired_stays_in_bounds_and_raises_only_raise() -> None:
    rng = random.Random(7)
    for _ in range(400):
        lo = rng.randint(0, 5)
        policy = ScalingPolicy(
            min_replicas=lo,
            max_replicas=rng.randint(max(1, lo), 40),
            target_per_replica=rng.choice([1.0, 5.0, 10.0]),
            target_utilisation=rng.choice([0.5, 0.7, 1.0]),
            scale_down_delay_s=rng.choice([0.0, 30.0, 120.0]),
            scale_to_zero_after_s=rng.choice([0.0, 60.0, 300.0]),
        )
        now = NOW + rng.randint(0, 10_000) * S
        samples = [
            LoadSample(now - rng.randint(0, 150) * S, rng.choice([0.0, rng.uniform(0, 300)]))
            for _ in range(rng.randint(0, 30))
        ]
        state = ScalerState(
            panic_since=rng.choice([None, now - 30 * S]),
            panic_last_over=rng.choice([None, now - 20 * S]),
            panic_max=rng.randint(0, 50),
            recent=((now - 10 * S, rng.randint(0, 50)),) if rng.random() < 0.5 else (),
            idle_since=rng.choice([None, now - 400 * S]),
        )
        if state.panic_since is None:
            state = ScalerState(recent=state.recent, idle_since=state.idle_since)
        ready = rng.randint(0, 40)
        current = rng.randint(ready, 45)
        waiting = rng.choice([0, 0, 3])

        tick = partial(
            decide,
            policy=policy,
            samples=samples,
            ready=ready,
            current=current,
            now=now,
            state=state,
            waiting_requests=waiting,
            startup_s=60.0,
        )
        plain = tick()
        assert policy.min_replicas <= plain.desired <= policy.max_replicas
        raised = tick(
            forecast=[ForecastPoint(now + 30 * S, rng.uniform(0, 500))],
            floors=[Floor(start=now, until=now + 60 * S, replicas=rng.randint(0, 50))],
        )
        assert policy.min_replicas <= raised.desired <= policy.max_replicas
        assert raised.desired >= plain.desired  # forecasts and floors only ever raise
        if all(s.at <= now - 60 * S for s in samples):  # missing data: never below current
            assert plain.desired >= min(current, policy.max_replicas)


def test_property_panic_never_scales_down() -> None:
    rng = random.Random(11)
    for _ in range(50):
        service = Service(replicas=rng.randint(1, 20))
        levels = [rng.uniform(0, 400) for _ in range(13)]
        service.run(120, lambda t, levels=levels: levels[int((t - NOW).total_seconds()) // 10])
        for (_, before), (_, after) in zip(service.decisions, service.decisions[1:], strict=False):
            if before.mode is ScaleMode.PANIC and after.mode is ScaleMode.PANIC:
                assert after.desired >= before.desired
        assert all(math.isfinite(d.stable_load or 0) for _, d in service.decisions)
