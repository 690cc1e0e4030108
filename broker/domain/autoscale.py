"""How many replicas an inference service wants: Knative's KPA rules, plus forecasts and floors.

`decide` is one tick of the autoscaler, a pure function of the load samples, the replica
counts, the clock (`now`) and the `ScalerState` the previous tick returned. The reactive
part follows Knative's KPA (`pkg/autoscaler/scaling/autoscaler.go`, and
https://knative.dev/docs/serving/autoscaling/kpa-specific/):

* the load is averaged over a stable window (60 s) and a panic window (6 s); each wants
  ``ceil(load / (target × utilisation))`` replicas, bounded per tick by the rates against
  the ready count (``ceil(1000 × ready)`` up, ``floor(ready / 2)`` down; ready counts as 1
  when it is 0, as in Knative);
* panic starts when the panic window wants at least ``panic_threshold`` (2×) the ready
  replicas, and lasts until a whole stable window has passed without that; in panic the
  service never shrinks (the highest count seen in the panic is kept);
* a scale-down delay keeps the highest recommendation of the last `scale_down_delay_s`.

Samples may be irregular: each one is taken as the average of the load since the sample
before it (a rate scraped from a counter, or the queue's averaged in-flight count), so the
window mean weighs every sample by the time it covers. A window with no sample is missing
data: the service keeps its current count and is never scaled to zero for it.

On top of the reactive count, each of these may only raise it, and the largest names the
mode: a forecast of the load over the next start-up time plus `forecast_margin_s` (so a
replica is ready before the rise, never fewer replicas because of a forecast); the floors
set by signals, from `startup_s` before their start until their end; and activation, one
replica at least when requests arrive at zero. The bounds [min, max] are applied last.

Scale to zero needs `min_replicas == 0` and a whole stable window of zero load without a
gap in the data (nothing arriving, nothing in flight): the service is idle. The scale-down
delay still holds its replicas through the lull (a bursty service's next burst finds them),
then one replica stays for the rest of the idle period, then none, unless a forecast or a
floor wants replicas; an idle period shorter than the delay ends the delay's hold too. The
idle period is `scale_to_zero_after_s` (300 s by default). With None it is the start-up
time of a new replica, at least 30 s (Knative's grace period): the ski-rental break-even of
an idle replica against a cold start if a cold start cost only its start-up. It costs more:
requests queue through it and the wake panics into extra replicas, so on bursty traffic
(the serving replay's code trace, gaps of 1–3 minutes) that rule spent more GPU-hours
than never going to zero; hence the longer default.

The forecast asks for its upper quantile at the full target per replica, not at the
utilisation target: the quantile is the headroom for the rise, which the utilisation
target (Knative's 70 %) only guesses at, and counting both over-provisions. A forecast
under a hundredth of one replica's target wants no replica (`FORECAST_FLOOR`): fitted on
idle nights, a quantile model answers 0.005 in flight, not zero, and that held a
working-hours service's replica all night.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

__all__ = [
    "Floor",
    "ForecastPoint",
    "LoadMetric",
    "LoadSample",
    "ScaleDecision",
    "ScaleMode",
    "ScalerState",
    "ScalingPolicy",
    "decide",
    "replicas_for",
]

_EPS = 1e-9  # 100 / 10 must want 10 replicas, not 11 from a rounding error
FORECAST_FLOOR = 0.01  # of one replica's target: a forecast below it wants no replica
MIN_IDLE_S = 30.0  # the shortest start-up idle period: Knative's scale-to-zero grace period


class LoadMetric(enum.StrEnum):
    RPS = "rps"  # requests per second
    CONCURRENCY = "concurrency"  # requests in flight

    @property
    def unit(self) -> str:
        return "rps" if self is LoadMetric.RPS else "in flight"


class ScaleMode(enum.StrEnum):
    STABLE = "stable"
    PANIC = "panic"
    PREDICTIVE = "predictive"
    FLOOR = "floor"
    ZERO = "zero"
    ACTIVATION = "activation"
    BOUNDS = "bounds"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy:
    """A service's autoscaling settings; the defaults are Knative's except where noted."""

    min_replicas: int = 0
    max_replicas: int = 1
    metric: LoadMetric = LoadMetric.RPS
    target_per_replica: float = 1.0  # the load one replica sustains within its latency SLO
    # Knative's 70 % (container-concurrency-target-percentage), for both metrics: the
    # headroom absorbs a rise while new replicas start, and GPU replicas start in minutes.
    target_utilisation: float = 0.7
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0  # Knative: 10 % of the stable window
    panic_threshold: float = 2.0  # Knative's 200 %
    # Knative's default is 0; a GPU replica costs a model load to bring back, so hold a
    # recommendation for two minutes (about one start-up) before acting on a lower one.
    scale_down_delay_s: float = 120.0
    # idle (zero load over a stable window) this long before going to 0; None: the
    # start-up time of a new replica, at least `MIN_IDLE_S` (see the module docstring)
    scale_to_zero_after_s: float | None = 300.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    # A forecast is read up to start-up + this far ahead: a rise the reactive part would only
    # see after a stable window must be covered by the forecast instead.
    forecast_margin_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be ≥ 0, got {self.min_replicas}")
        if self.max_replicas < max(1, self.min_replicas):
            raise ValueError(
                f"max_replicas must be ≥ max(1, min_replicas), got {self.max_replicas}"
            )
        if not self.target_per_replica > 0:
            raise ValueError("target_per_replica must be > 0")
        if not 0 < self.target_utilisation <= 1:
            raise ValueError("target_utilisation must be in (0, 1]")
        if not 0 < self.panic_window_s <= self.stable_window_s:
            raise ValueError("windows must satisfy 0 < panic_window_s ≤ stable_window_s")
        if (
            self.panic_threshold <= 1
            or self.max_scale_up_rate <= 1
            or self.max_scale_down_rate <= 1
        ):
            raise ValueError("panic_threshold and the scale rates must exceed 1")
        idle = self.scale_to_zero_after_s or 0.0
        if min(self.scale_down_delay_s, idle, self.forecast_margin_s) < 0:
            raise ValueError("delays and margins must be ≥ 0")

    def idle_period_s(self, startup_s: float) -> float:
        """How long an idle service keeps its last replica."""
        if self.scale_to_zero_after_s is not None:
            return self.scale_to_zero_after_s
        return max(startup_s, MIN_IDLE_S)

    @property
    def effective_target(self) -> float:
        """The load per replica the autoscaler aims for."""
        return self.target_per_replica * self.target_utilisation


@dataclass(frozen=True, slots=True)
class LoadSample:
    """The service's total load (rps or in flight) averaged over the period ending `at`."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """A predicted quantile of the service's load at `at`."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Floor:
    """At least `replicas` from `start` until `until` (inclusive), e.g. from a signal."""

    start: datetime
    until: datetime
    replicas: int
    label: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalerState:
    """What one tick hands the next; `ScalerState()` starts a service afresh."""

    panic_since: datetime | None = None
    panic_last_over: datetime | None = None  # the last tick over the threshold (Knative's)
    panic_max: int = 0  # the most replicas wanted during this panic
    recent: tuple[tuple[datetime, int], ...] = ()  # recommendations within the delay
    idle_since: datetime | None = None  # zero load observed, with no data gap, since then


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDecision:
    desired: int
    mode: ScaleMode
    reason: str
    state: ScalerState
    stable_load: float | None = None  # the window means, None when missing
    panic_load: float | None = None


def replicas_for(load: float, *, policy: ScalingPolicy) -> int:
    """Replicas that carry `load` at the policy's target utilisation."""
    return max(0, math.ceil(load / policy.effective_target - _EPS))


def decide(
    *,
    policy: ScalingPolicy,
    samples: Sequence[LoadSample],
    ready: int,
    current: int,
    now: datetime,
    state: ScalerState,
    forecast: Sequence[ForecastPoint] = (),
    startup_s: float = 0.0,
    floors: Sequence[Floor] = (),
    waiting_requests: int = 0,
) -> ScaleDecision:
    """One autoscaler tick: the replicas `policy` wants at `now` and the state for the next.

    `ready`: replicas serving; `current`: replicas asked for (ready or starting);
    `startup_s`: how long a new replica takes to serve at the site it would go to;
    `waiting_requests`: requests held while there is no replica to serve them.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if min(ready, current, waiting_requests) < 0 or startup_s < 0:
        raise ValueError("ready, current, waiting_requests and startup_s must be ≥ 0")
    ordered = sorted((s for s in samples if s.at <= now), key=lambda s: s.at)
    stable_start = now - timedelta(seconds=policy.stable_window_s)
    stable = _window_mean(ordered, start=stable_start, end=now)
    window = ordered[bisect_right(ordered, stable_start, key=lambda s: s.at) :]
    panic: float | None = None
    if stable is None:
        desired, mode, state = current, ScaleMode.STABLE, replace(state, idle_since=None)
        parts = [f"no load samples in the last {_n(policy.stable_window_s)} s: keeping {current}"]
    else:
        panic = _window_mean(ordered, start=now - timedelta(seconds=policy.panic_window_s), end=now)
        if panic is None:  # nothing that recent: the freshest sample is the best evidence
            panic = window[-1].value
        desired, mode, parts, state = _reactive(
            policy=policy, stable=stable, panic=panic, ready=ready, now=now, state=state
        )
        active = waiting_requests > 0 or any(s.value > 0 for s in window)
        idle = None if active else (state.idle_since or window[0].at)
        state = replace(state, idle_since=idle)

    raised = 0  # the most replicas a forecast or a floor wants
    for wanted, raised_mode, why in _raises(
        policy=policy, forecast=forecast, floors=floors, now=now, startup_s=startup_s
    ):
        raised = max(raised, wanted)
        if wanted > desired:
            desired, mode = wanted, raised_mode
            parts.append(why)
    woke = current == 0 and (waiting_requests > 0 or any(s.value > 0 for s in window))
    if woke and mode in (ScaleMode.STABLE, ScaleMode.PANIC):
        desired, mode = max(desired, 1), ScaleMode.ACTIVATION
        cause = f"{waiting_requests} requests waiting" if waiting_requests else "load seen"
        parts.append(f"activation at zero replicas ({cause})")

    desired, state = _delay(policy=policy, desired=desired, now=now, state=state, parts=parts)
    at_rest = policy.min_replicas == 0 and state.idle_since is not None and not woke
    if at_rest and raised == 0:
        idle_s = (now - state.idle_since).total_seconds() if state.idle_since else 0.0
        if desired == 0 or idle_s >= policy.idle_period_s(startup_s):
            # the delay holds replicas through a lull; the idle period ends even its hold
            desired, mode = _zero(
                policy=policy,
                current=current,
                now=now,
                state=state,
                parts=parts,
                startup_s=startup_s,
            )

    bounded = min(max(desired, policy.min_replicas), policy.max_replicas)
    if bounded != desired:
        mode = ScaleMode.BOUNDS
        parts.append(f"{desired} outside [{policy.min_replicas}, {policy.max_replicas}]")
    reason = "; ".join(parts)
    if not reason.endswith(f"→ {bounded}"):
        reason += f" → {bounded}"
    return ScaleDecision(
        desired=bounded,
        mode=mode,
        reason=reason,
        state=state,
        stable_load=stable,
        panic_load=panic,
    )


def _reactive(
    *,
    policy: ScalingPolicy,
    stable: float,
    panic: float,
    ready: int,
    now: datetime,
    state: ScalerState,
) -> tuple[int, ScaleMode, list[str], ScalerState]:
    """Knative's stable and panic modes, rate-limited against the ready count."""
    unit = policy.metric.unit
    per = f"{_n(policy.target_per_replica)} per replica at {_n(policy.target_utilisation)}"
    serving = max(1, ready)  # Knative: ready 0 counts as 1, or nothing could ever panic
    up_to = math.ceil(policy.max_scale_up_rate * serving)
    down_to = math.floor(serving / policy.max_scale_down_rate)
    want_stable = replicas_for(stable, policy=policy)
    want_panic = replicas_for(panic, policy=policy)
    by_stable = min(max(want_stable, down_to), up_to)
    by_panic = min(max(want_panic, down_to), up_to)
    over = want_panic / serving >= policy.panic_threshold
    stable_why = f"load {_n(stable)} {unit} over {_n(policy.stable_window_s)} s / {per}"
    stable_why += f" → {want_stable}"
    if by_stable != want_stable:
        way = "up" if by_stable < want_stable else "down"
        stable_why += f" (scale-{way} rate-limited to {by_stable} from {ready} ready)"

    window = timedelta(seconds=policy.stable_window_s)
    if over:
        state = replace(state, panic_since=state.panic_since or now, panic_last_over=now)
    elif state.panic_last_over is not None and now <= state.panic_last_over + window:
        pass  # Knative leaves panic only after a whole stable window below the threshold
    elif state.panic_since is not None:
        state = replace(state, panic_since=None, panic_last_over=None, panic_max=0)
        return by_stable, ScaleMode.STABLE, [stable_why + " (panic over)"], state
    if state.panic_since is None:
        return by_stable, ScaleMode.STABLE, [stable_why], state

    desired = max(by_stable, by_panic, state.panic_max)
    state = replace(state, panic_max=desired)
    why = (
        f"panic since {state.panic_since:%H:%M:%S}: load {_n(panic)} {unit} over"
        f" {_n(policy.panic_window_s)} s / {per} → {want_panic}"
        f" vs {ready} ready (threshold {_n(policy.panic_threshold)}×)"
    )
    if desired > max(by_stable, by_panic):
        why += f"; holding {desired}: no scale-down in panic"
    return desired, ScaleMode.PANIC, [why, stable_why], state


def _raises(
    *,
    policy: ScalingPolicy,
    forecast: Sequence[ForecastPoint],
    floors: Sequence[Floor],
    now: datetime,
    startup_s: float,
) -> list[tuple[int, ScaleMode, str]]:
    """What the forecast and the floors ask for now, with why; the caller keeps the largest."""
    out: list[tuple[int, ScaleMode, str]] = []
    lead = timedelta(seconds=startup_s)
    horizon = now + lead + timedelta(seconds=policy.forecast_margin_s)
    ahead = [p for p in forecast if now <= p.at <= horizon]
    if ahead:
        peak = max(ahead, key=lambda p: (p.value, -p.at.timestamp()))
        # at full target: the forecast's quantile is the headroom for the rise, which the
        # reactive part's utilisation target only guesses at
        share = peak.value / policy.target_per_replica
        # a hundredth of a replica's load is a quantile model's rounding of "none" (fitted
        # on zeros it answers 0.005), not a reason to hold or wake a replica
        wanted = 0 if share < FORECAST_FLOOR else math.ceil(share - _EPS)
        out.append(
            (
                wanted,
                ScaleMode.PREDICTIVE,
                f"forecast {_n(peak.value)} {policy.metric.unit} at {peak.at:%H:%M:%S}"
                f" (within start-up {_n(startup_s)} s + {_n(policy.forecast_margin_s)} s)"
                f" / {_n(policy.target_per_replica)} per replica → {wanted}",
            )
        )
    for floor in sorted(floors, key=lambda f: (-f.replicas, f.start)):
        if floor.start - lead <= now <= floor.until:
            why = f"floor {floor.replicas} until {floor.until:%H:%M}"
            if floor.label:
                why += f" from signal '{floor.label}'"
            if now < floor.start:
                why += f" (starts {floor.start:%H:%M}, raised {_n(startup_s)} s ahead)"
            out.append((floor.replicas, ScaleMode.FLOOR, why))
            break  # the highest floor in force is the only one that can matter
    return out


def _delay(
    *, policy: ScalingPolicy, desired: int, now: datetime, state: ScalerState, parts: list[str]
) -> tuple[int, ScalerState]:
    """Keep the highest recommendation of the last `scale_down_delay_s` (Knative's window)."""
    if policy.scale_down_delay_s <= 0:
        return desired, replace(state, recent=())
    since = now - timedelta(seconds=policy.scale_down_delay_s)
    recent = (*(r for r in state.recent if r[0] > since), (now, desired))
    held = max(n for _, n in recent)
    if held > desired:
        parts.append(
            f"scale-down delayed: keeping {held}, the highest in the last"
            f" {_n(policy.scale_down_delay_s)} s"
        )
    return held, replace(state, recent=recent)


def _zero(
    *,
    policy: ScalingPolicy,
    current: int,
    now: datetime,
    state: ScalerState,
    parts: list[str],
    startup_s: float,
) -> tuple[int, ScaleMode]:
    """An idle service: one replica for the idle period, then none."""
    if current == 0:
        parts.append("staying at zero")
        return 0, ScaleMode.ZERO
    idle_s = (now - state.idle_since).total_seconds() if state.idle_since else 0.0
    period = policy.idle_period_s(startup_s)
    how = "" if policy.scale_to_zero_after_s is not None else " (the start-up time)"
    if idle_s >= period:
        parts.append(f"idle {_n(idle_s)} s ≥ {_n(period)} s{how}: scale to zero")
        return 0, ScaleMode.ZERO
    parts.append(f"idle {_n(idle_s)} s of {_n(period)} s{how} before scale to zero: keeping 1")
    return 1, ScaleMode.STABLE


def _window_mean(ordered: Sequence[LoadSample], *, start: datetime, end: datetime) -> float | None:
    """The time-weighted mean load over (start, end], None without a sample in it.

    Each sample covers the time since the one before it, clipped to the window; the very
    first sample ever, with nothing before it, is given the median span of the others.
    """
    first = bisect_right(ordered, start, key=lambda s: s.at)
    last = bisect_right(ordered, end, key=lambda s: s.at)
    if first == last:
        return None
    spans: list[float | None] = []
    for i in range(first, last):
        before = ordered[i - 1].at if i > 0 else None
        spans.append(
            None if before is None else (ordered[i].at - max(before, start)).total_seconds()
        )
    known = sorted(s for s in spans if s is not None)
    typical = known[len(known) // 2] if known else 1.0
    weights = [typical if s is None else s for s in spans]
    values = [s.value for s in ordered[first:last]]
    total = sum(weights)
    if total <= 0:  # samples all at one instant
        return sum(values) / len(values)
    return sum(w * v for w, v in zip(weights, values, strict=True)) / total


def _n(x: float) -> str:
    """A figure for a reason: whole numbers bare, others to three significant digits."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
