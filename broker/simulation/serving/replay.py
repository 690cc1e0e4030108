"""A discrete-event replay of one inference service in virtual time, autoscaled as live.

Events, in this order at equal times: a request completes, a replica becomes ready, a
request arrives, the autoscaler ticks. A request joins one FIFO queue and takes a free slot
on the ready replica with the fewest requests (`rates.ServingRates`: `max_batch` slots, a
fixed service time per request); latency = queueing + service.

Every `tick_s` the replay does what `broker.serving.controller` does each tick: it records
one load sample (the requests in flight, queued ones included, averaged over the tick, as
the autoscaler's docstring asks of a concurrency sample), calls the same
`broker.domain.autoscale.decide` with the same policy (`policy_of` of a `ServiceSpec`) on
the samples of the stable window, and converges: new replicas are ready `startup_s` later
and are accounted from their start; a replica removed while starting stops at once, a
ready one stops taking requests and stops when its last one ends (not-ready first, then
the least busy). One difference, from Knative rather than the controller: a request that
arrives when no replica is ready or starting pokes the autoscaler at once (Knative's
activator), so a cold start lasts exactly `startup_s` from the first waiting request.

`reactive+predictive` adds a forecast of the same load (`broker.demand.service_load`),
refitted every `refit_every_s` on the history handed in plus the samples seen so far, and
read up to start-up + the controller's `FORECAST_MARGIN_S` ahead, as the controller does.
`static-peak` holds, from the start, the replicas whose slots cover the most requests ever
in service at once with unlimited replicas (so nothing ever queues). The autoscaled
policies start warm: with the replicas the first minute's load wants, ready.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.demand.service_load import (
    LoadForecastConfig,
    LoadForecaster,
    LoadMethod,
    floor_minute,
    per_minute,
)
from broker.domain.autoscale import (
    ForecastPoint,
    LoadMetric,
    LoadSample,
    ScalerState,
    ScalingPolicy,
    decide,
    replicas_for,
)
from broker.domain.enums import Tier
from broker.domain.jobs import Resources, Workload
from broker.domain.services import ServiceSpec
from broker.serving.controller import FORECAST_MARGIN_S, policy_of
from broker.serving.settings import ServingSettings
from broker.simulation.serving.rates import ServingRates
from broker.simulation.serving.requests import RequestTrace, offered_concurrency

__all__ = [
    "Outcome",
    "PolicyKind",
    "ReplaySettings",
    "Variant",
    "peak_replicas",
    "replay",
    "scaling_policy",
]


_LIVE = ServingSettings()  # the live controller's defaults


class PolicyKind(enum.StrEnum):
    STATIC_PEAK = "static-peak"
    REACTIVE = "reactive"
    PREDICTIVE = "reactive+predictive"


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    kind: PolicyKind
    scale_to_zero: bool = False  # min_replicas 0 instead of the settings' minimum

    @property
    def name(self) -> str:
        return f"{self.kind.value}+zero" if self.scale_to_zero else self.kind.value


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaySettings:
    """One service's replay: its serving model and its `ServiceSpec`-level settings."""

    rates: ServingRates
    startup_s: float = 90.0  # image pull + weights load + engine warm-up (docs/serving.md)
    tick_s: float = _LIVE.interval_s  # the controller's tick
    min_replicas: int = 1  # for the variants that do not scale to zero
    max_replicas: int | None = None  # None: twice the static peak
    # per replica, in flight; None: `max_batch`, a replica's slots
    target: float | None = None
    stable_window_s: float = 60.0  # `ServiceSpec` defaults from here on
    scale_down_delay_s: float = 120.0
    scale_to_zero_after_s: float | None = 300.0  # None: the start-up time
    forecast_quantile: float = 0.9
    refit_every_s: float = _LIVE.refit_s  # the controller's refit period
    history: tuple[LoadSample, ...] = ()  # the load before the trace, for the forecaster

    def __post_init__(self) -> None:
        if self.startup_s < 0 or self.tick_s <= 0 or self.refit_every_s <= 0:
            raise ValueError("startup_s must be ≥ 0, tick_s and refit_every_s > 0")
        if self.min_replicas < 0 or (self.max_replicas is not None and self.max_replicas < 1):
            raise ValueError("min_replicas must be ≥ 0 and max_replicas ≥ 1")


@dataclass(slots=True, kw_only=True)
class Outcome:
    variant: str
    latency_s: list[float]  # per request, in trace order
    service_s: list[float]
    spans: list[tuple[float, float, float]]  # per replica: created, ready (or stop), stop
    cold_starts: list[tuple[float, float]]  # (woke at, seconds to the first ready replica)
    end_s: float
    replicas_by_minute: list[int]  # replicas asked for at the end of each minute
    modes: Counter[str] = field(default_factory=Counter)
    forecast_method: str | None = None
    policy: dict[str, float] = field(default_factory=dict)


def scaling_policy(
    settings: ReplaySettings, *, scale_to_zero: bool, max_replicas: int
) -> ScalingPolicy:
    """The autoscaler policy, through the live controller's own mapping (`policy_of`)."""
    rates = settings.rates
    spec = ServiceSpec(
        name="replay",
        tier=Tier.P1,
        resources=Resources(gpus=rates.gpus_per_replica, gpu_models=(rates.gpu_model,)),
        workload=Workload(image="replay"),
        port=8000,
        min_replicas=0 if scale_to_zero else max(1, settings.min_replicas),
        max_replicas=max_replicas,
        metric=LoadMetric.CONCURRENCY,
        target=settings.target or float(rates.max_batch),
        stable_window_s=settings.stable_window_s,
        scale_down_delay_s=settings.scale_down_delay_s,
        scale_to_zero_after_s=settings.scale_to_zero_after_s,
    )
    return policy_of(spec)


def peak_replicas(trace: RequestTrace, *, rates: ServingRates) -> int:
    """Replicas whose slots hold every request at once with no queue, at the busiest instant."""
    events: list[tuple[float, int]] = []
    for r in trace.requests:
        s = rates.service_s(context_tokens=r.context_tokens, generated_tokens=r.generated_tokens)
        events += [(r.at_s, 1), (r.at_s + s, -1)]
    events.sort()  # at one instant an end (-1) sorts before a start, as the replay orders them
    level = most = 0
    for _, step in events:
        level += step
        most = max(most, level)
    return max(1, math.ceil(most / rates.max_batch))


class _Kind(enum.IntEnum):  # the order of events at one instant
    COMPLETE = 0
    READY = 1
    ARRIVAL = 2
    TICK = 3


@dataclass(slots=True)
class _Replica:
    id: int
    created: float
    ready_at: float | None = None
    draining: bool = False
    stopped: float | None = None
    active: int = 0


def replay(trace: RequestTrace, *, settings: ReplaySettings, variant: Variant) -> Outcome:
    """Replay `trace` under `variant`; deterministic for the same inputs."""
    return _Replay(trace=trace, settings=settings, variant=variant).run()


class _Replay:
    def __init__(self, *, trace: RequestTrace, settings: ReplaySettings, variant: Variant) -> None:
        self.trace, self.settings, self.variant = trace, settings, variant
        self.rates = settings.rates
        self.peak = peak_replicas(trace, rates=self.rates)
        top = settings.max_replicas or max(2, 2 * self.peak)
        self.policy = scaling_policy(
            settings, scale_to_zero=variant.scale_to_zero, max_replicas=top
        )
        reqs = trace.requests
        self.service = [
            self.rates.service_s(
                context_tokens=r.context_tokens, generated_tokens=r.generated_tokens
            )
            for r in reqs
        ]
        self.latency = [math.nan] * len(reqs)
        self.heap: list[tuple[float, int, int, int]] = []  # (time, kind, seq, payload)
        self.seq = 0
        self.now = 0.0
        self.replicas: list[_Replica] = []  # every replica ever, by id
        self.running: list[_Replica] = []  # those not stopped (a week's replay makes thousands)
        self.queue: deque[int] = deque()
        self.in_flight = 0  # in service + queued
        self.area = 0.0  # ∫ in flight dt since the last tick
        self.last_change = 0.0
        self.last_tick = 0.0
        self.samples: deque[LoadSample] = deque()
        # every sample's minute sums and counts, for the forecaster (a refit reads minutes)
        self.minute_sum: list[float] = []
        self.minute_count: list[int] = []
        self.history_start, self.history_minutes = per_minute(settings.history, until=trace.start)
        self.state = ScalerState()
        self.cold_since: float | None = None
        self.cold: list[tuple[float, float]] = []
        self.done = 0
        self.by_minute: list[int] = []
        self.modes: Counter[str] = Counter()
        self.forecaster: LoadForecaster | None = None
        self.fitted_at: float | None = None
        self.forecast_cache: tuple[datetime, list[ForecastPoint]] | None = None

    # -- the event loop -------------------------------------------------------------------

    def push(self, at: float, kind: _Kind, payload: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, int(kind), self.seq, payload))

    def run(self) -> Outcome:
        horizon = self.trace.minutes * 60.0
        self.start_replicas()
        if self.variant.kind is not PolicyKind.STATIC_PEAK:
            self.push(self.settings.tick_s, _Kind.TICK, 0)
        reqs = self.trace.requests
        total = len(reqs)
        nxt = 0  # arrivals are read in order, not queued: a week's trace is millions
        while self.heap or nxt < total:
            if nxt < total and (
                not self.heap or (reqs[nxt].at_s, int(_Kind.ARRIVAL)) < self.heap[0][:2]
            ):
                at, kind, payload = reqs[nxt].at_s, int(_Kind.ARRIVAL), nxt
                nxt += 1
            else:
                at, kind, _, payload = self.heap[0]
                if self.done == total and at > horizon:
                    break
                heapq.heappop(self.heap)
            self.advance(at)
            match _Kind(kind):
                case _Kind.COMPLETE:
                    self.complete(payload)
                case _Kind.READY:
                    self.ready(self.replicas[payload])
                case _Kind.ARRIVAL:
                    self.arrive(payload)
                case _Kind.TICK:
                    self.tick()
        end = max(horizon, self.now)
        self.advance(end)
        return Outcome(
            variant=self.variant.name,
            latency_s=self.latency,
            service_s=self.service,
            spans=[self.span(r, end) for r in self.replicas],
            cold_starts=self.cold,
            end_s=end,
            replicas_by_minute=self.by_minute,
            modes=self.modes,
            forecast_method=None if self.forecaster is None else str(self.forecaster.method),
            policy={
                "min_replicas": self.policy.min_replicas,
                "max_replicas": self.policy.max_replicas,
                "target_per_replica": self.policy.target_per_replica,
                "target_utilisation": self.policy.target_utilisation,
                "static_replicas": self.peak,
            },
        )

    @staticmethod
    def span(r: _Replica, end: float) -> tuple[float, float, float]:
        stop = end if r.stopped is None else r.stopped
        ready = stop if r.ready_at is None else min(r.ready_at, stop)
        return (r.created, ready, stop)

    def advance(self, at: float) -> None:
        """Move the clock, integrating the in-flight count for the next load sample."""
        while self.by_minute.__len__() < int(at // 60):  # minutes that ended before `at`
            self.by_minute.append(len(self.live()))
        self.area += self.in_flight * (at - self.last_change)
        self.last_change = self.now = at

    # -- replicas -------------------------------------------------------------------------

    def live(self) -> list[_Replica]:
        """Replicas asked for: ready or starting, not draining, not stopped."""
        return [r for r in self.running if not r.draining]

    def stop(self, r: _Replica) -> None:
        r.stopped = self.now
        self.running.remove(r)

    def start_replicas(self) -> None:
        if self.variant.kind is PolicyKind.STATIC_PEAK:
            count = self.peak
        else:
            first = offered_concurrency(self.trace, rates=self.rates)[:1] or [0.0]
            wanted = replicas_for(first[0], policy=self.policy)
            count = min(max(wanted, self.policy.min_replicas), self.policy.max_replicas)
        for _ in range(count):
            r = _Replica(id=len(self.replicas), created=0.0, ready_at=0.0)
            self.replicas.append(r)
            self.running.append(r)

    def add(self) -> None:
        r = _Replica(id=len(self.replicas), created=self.now)
        self.replicas.append(r)
        self.running.append(r)
        self.push(self.now + self.settings.startup_s, _Kind.READY, r.id)

    def remove(self, count: int) -> None:
        """Stop `count` replicas: starting ones first (newest first), then the least busy."""
        live = self.live()
        starting = sorted((r for r in live if r.ready_at is None), key=lambda r: -r.id)
        ready = sorted((r for r in live if r.ready_at is not None), key=lambda r: (r.active, -r.id))
        for r in (starting + ready)[:count]:
            r.draining = True
            if r.active == 0:
                self.stop(r)

    def ready(self, r: _Replica) -> None:
        if r.stopped is not None or r.draining:  # removed while starting
            return
        r.ready_at = self.now
        if self.cold_since is not None:
            self.cold.append((self.cold_since, self.now - self.cold_since))
            self.cold_since = None
        self.dispatch()

    # -- requests -------------------------------------------------------------------------

    def arrive(self, i: int) -> None:
        self.queue.append(i)
        self.in_flight += 1
        if not self.live():  # nothing ready or starting: the activator wakes the service
            if self.cold_since is None:
                self.cold_since = self.now
            if self.variant.kind is not PolicyKind.STATIC_PEAK:
                self.scale()
        self.dispatch()

    def complete(self, packed: int) -> None:
        rid, i = divmod(packed, len(self.trace.requests))
        r = self.replicas[rid]
        r.active -= 1
        self.in_flight -= 1
        self.done += 1
        self.latency[i] = self.now - self.trace.requests[i].at_s
        if r.draining and r.active == 0:
            self.stop(r)
        self.dispatch()

    def dispatch(self) -> None:
        cap = self.rates.max_batch
        while self.queue:
            free = [
                r
                for r in self.running
                if r.ready_at is not None and not r.draining and r.active < cap
            ]
            if not free:
                return
            r = min(free, key=lambda x: (x.active, x.id))
            i = self.queue.popleft()
            r.active += 1
            packed = r.id * len(self.trace.requests) + i
            self.push(self.now + self.service[i], _Kind.COMPLETE, packed)

    # -- the autoscaler -------------------------------------------------------------------

    def tick(self) -> None:
        span = self.now - self.last_tick
        value = self.area / span if span > 0 else float(self.in_flight)
        sample = LoadSample(self.at(self.now), value)
        self.samples.append(sample)
        minute = int(self.now // 60)  # as `per_minute` buckets it
        while len(self.minute_sum) <= minute:
            self.minute_sum.append(0.0)
            self.minute_count.append(0)
        self.minute_sum[minute] += value
        self.minute_count[minute] += 1
        self.area, self.last_tick = 0.0, self.now
        keep_from = sample.at - timedelta(
            seconds=self.policy.stable_window_s + self.settings.tick_s
        )
        while self.samples and self.samples[0].at < keep_from:
            self.samples.popleft()
        self.scale()
        self.push(self.now + self.settings.tick_s, _Kind.TICK, 0)

    def known_minutes(self) -> tuple[datetime, list[float]]:
        """The history's minutes, then the replay's whole minutes before now's (each the
        mean of its samples; a minute without one repeats the one before), as
        `per_minute` would give them from the samples."""
        whole = int(self.now // 60)
        replayed: list[float] = []
        last = self.history_minutes[-1] if self.history_minutes.size else 0.0
        for m in range(min(whole, len(self.minute_sum))):
            if self.minute_count[m]:
                last = self.minute_sum[m] / self.minute_count[m]
            replayed.append(float(last))
        if self.history_start is None:
            return self.trace.start, replayed
        gap = int((self.trace.start - self.history_start) / timedelta(minutes=1))
        before = list(self.history_minutes[:gap])
        before += [before[-1] if before else 0.0] * (gap - len(before))
        return self.history_start, before + replayed

    def at(self, seconds: float) -> datetime:
        return self.trace.start + timedelta(seconds=seconds)

    def scale(self) -> None:
        live = self.live()
        ready = sum(1 for r in live if r.ready_at is not None)
        decision = decide(
            policy=self.policy,
            samples=list(self.samples),
            ready=ready,
            current=len(live),
            now=self.at(self.now),
            state=self.state,
            forecast=self.forecast(),
            startup_s=self.settings.startup_s,
            waiting_requests=len(self.queue) if ready == 0 else 0,
        )
        self.state = decision.state
        self.modes[decision.mode.value] += 1
        if decision.desired > len(live):
            for _ in range(decision.desired - len(live)):
                self.add()
        elif decision.desired < len(live):
            self.remove(len(live) - decision.desired)

    def forecast(self) -> Sequence[ForecastPoint]:
        """The controller's forecast: refitted every `refit_every_s` on the history and the
        samples so far, none unless the model is fitted (not persistence), read up to
        start-up + `FORECAST_MARGIN_S`. Recomputed once a minute, not every tick: the model
        is per minute, and this keeps an hour's replay to seconds."""
        if self.variant.kind is not PolicyKind.PREDICTIVE:
            return ()
        now = self.at(self.now)
        due = self.fitted_at is None or self.now - self.fitted_at >= self.settings.refit_every_s
        if self.forecaster is None or due:
            start, minutes = self.known_minutes()
            self.forecaster = LoadForecaster(
                LoadForecastConfig(quantile=self.settings.forecast_quantile)
            ).fit_minutes(minutes, start=start)
            self.fitted_at, self.forecast_cache = self.now, None
        if self.forecaster.method is not LoadMethod.GBM_QUANTILE:
            return ()
        minute = floor_minute(now)
        if self.forecast_cache is None or self.forecast_cache[0] != minute:
            horizon = self.settings.startup_s + FORECAST_MARGIN_S
            points = self.forecaster.forecast(now, horizon_s=horizon, recent=list(self.samples))
            self.forecast_cache = (minute, points)
        return self.forecast_cache[1]
