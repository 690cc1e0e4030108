"""When and where to run a deferrable job: pure time-shifting over hourly intensity series.

`plan_window` compares running now against starting later, at every site option, and
defers only when that saves at least `min_saving` of the run-now emissions without ever
risking the deadline. It takes plain floats rather than carbon readings, so the same code
serves the scheduler (live forecasts), the simulator (replayed series) and the reports
(`offline_best`, the perfect-foresight lower bound).

Emissions of a run: the job's energy is spread evenly over [start, start + duration), and
each second is charged the intensity of the hour it falls in, so a run that starts at 10:30
for 90 minutes is charged half its energy at the 10:00 value and half at the 11:00 value.

Rules, in order:

1. P1 is never deferred, and neither is a job without a deadline: the broker only shifts
   work that declares its slack. Both run now.
2. Candidate starts are `now`, then the hour boundaries after `now` stepped by `step_s`,
   kept while ``start + duration + margin <= deadline``. A later start whose window the
   series does not fully cover is skipped (no guessing about hours we know nothing of).
3. The best candidate is the one with the lowest emissions over all sites; ties (within a
   relative 1e-9) go to the earliest start, then to the first option listed.
4. The job is deferred only when the best start is later than now and saves at least
   `min_saving` (a fraction) against the best run-now option; otherwise it runs now at the
   cleanest site. Running now is charged even where the series falls short (the first value
   stands in before it, the last after it, the previous across holes), because running now
   is the fallback that needs a number.

The chosen site is the carbon-best one; the scheduler may still re-run placement when the
deferred start comes, since capacity and prices move in the meantime.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker.domain.enums import Tier

__all__ = ["SiteOption", "WindowChoice", "offline_best", "plan_window", "run_window_gco2"]

_HOUR_S = 3600
_TIE = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteOption:
    """A pool that could take the job: its energy there and the site's hourly intensity.

    `hourly` holds (hour start, gCO2e/kWh) pairs in time order, each covering one hour, from
    the hour containing `now` to at least the deadline.
    """

    site: str
    pool_id: str
    energy_kwh: float
    hourly: Sequence[tuple[datetime, float]]


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowChoice:
    """The decision: start at `start_at` on `site`/`pool_id`; `defer` when that is later."""

    defer: bool
    start_at: datetime
    site: str
    pool_id: str
    gco2: float  # emissions of the chosen start
    gco2_now: float  # emissions of the best run-now option
    reason: str

    @property
    def saving(self) -> float:
        """Fraction of the run-now emissions the choice avoids (0 when running now)."""
        return 1.0 - self.gco2 / self.gco2_now if self.gco2_now > 0 else 0.0


class _Series:
    """An hourly series as epoch seconds, with exact integration over intervals."""

    __slots__ = ("starts", "values")

    def __init__(self, hourly: Sequence[tuple[datetime, float]]) -> None:
        self.starts: list[float] = []
        self.values: list[float] = []
        for at, value in hourly:
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(f"hourly timestamps must be timezone-aware, got {at}")
            if not 0.0 <= value < math.inf:
                raise ValueError(f"intensity {value} out of range at {at.isoformat()}")
            t = at.timestamp()
            if self.starts and t < self.starts[-1] + _HOUR_S:
                raise ValueError(f"hourly entries overlap or are out of order at {at}")
            self.starts.append(t)
            self.values.append(value)

    def integral(self, start: float, end: float, *, hold: bool) -> float | None:
        """∫ intensity dt over [start, end) in g·s/kWh, or None where not covered.

        Without `hold`, entry i covers [t_i, t_i + 1h) and any uncovered second gives None.
        With `hold`, entry i covers [t_i, t_{i+1}) (the first also everything before it,
        the last everything after), so every interval has a value.
        """
        n = len(self.starts)
        if n == 0:
            return None
        total = 0.0
        covered = 0.0
        i = max(bisect_right(self.starts, start) - 1, 0)
        while i < n:
            lo = -math.inf if hold and i == 0 else self.starts[i]
            if lo >= end:
                break
            if hold:
                hi = self.starts[i + 1] if i + 1 < n else math.inf
            else:
                hi = self.starts[i] + _HOUR_S
            overlap = min(hi, end) - max(lo, start)
            if overlap > 0:
                total += overlap * self.values[i]
                covered += overlap
            i += 1
        if covered < (end - start) - 1e-6:
            return None
        return total


def _aware(moment: datetime, *, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _gco2(
    series: _Series, *, energy_kwh: float, start: datetime, duration_s: float, hold: bool
) -> float | None:
    t0 = start.timestamp()
    integral = series.integral(t0, t0 + duration_s, hold=hold)
    if integral is None:
        return None
    return energy_kwh / duration_s * integral


def run_window_gco2(
    *,
    energy_kwh: float,
    start: datetime,
    duration_s: float,
    hourly: Sequence[tuple[datetime, float]],
) -> float | None:
    """Grams CO2e of a run of `energy_kwh` spread evenly over [start, start + duration_s).

    Exact over partial hours; None when `hourly` does not cover the whole window.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    _aware(start, name="start")
    return _gco2(
        _Series(hourly), energy_kwh=energy_kwh, start=start, duration_s=duration_s, hold=False
    )


def _candidate_starts(
    *, now: datetime, duration_s: int, deadline: datetime, margin_s: float, step_s: int
) -> list[datetime]:
    """Hour boundaries after `now`, stepped by `step_s`, that still meet the deadline."""
    span = timedelta(seconds=duration_s + margin_s)
    start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    out: list[datetime] = []
    while start + span <= deadline:
        out.append(start)
        start += timedelta(seconds=step_s)
    return out


def plan_window(
    *,
    now: datetime,
    duration_s: int,
    deadline: datetime | None,
    tier: Tier,
    options: Sequence[SiteOption],
    min_saving: float,
    margin_s: float,
    step_s: int = _HOUR_S,
) -> WindowChoice:
    """Run now or later, and where: the lowest-emission feasible start (see module rules)."""
    if not options:
        raise ValueError("no site options to choose from")
    if duration_s <= 0 or step_s <= 0:
        raise ValueError(f"duration_s and step_s must be positive, got {duration_s}, {step_s}")
    if min_saving < 0 or margin_s < 0:
        raise ValueError(f"min_saving and margin_s must be >= 0, got {min_saving}, {margin_s}")
    now = _aware(now, name="now")
    series = [_Series(option.hourly) for option in options]
    if any(not s.starts for s in series):
        raise ValueError("every site option needs a non-empty hourly series")

    now_costs: list[float] = []
    for option, s in zip(options, series, strict=True):
        cost = _gco2(s, energy_kwh=option.energy_kwh, start=now, duration_s=duration_s, hold=True)
        assert cost is not None  # hold=True always covers
        now_costs.append(cost)
    best_now = min(range(len(options)), key=lambda k: (now_costs[k], k))
    gco2_now = now_costs[best_now]

    def run_now(reason: str) -> WindowChoice:
        option = options[best_now]
        return WindowChoice(
            defer=False,
            start_at=now,
            site=option.site,
            pool_id=option.pool_id,
            gco2=gco2_now,
            gco2_now=gco2_now,
            reason=reason,
        )

    if tier is Tier.P1:
        return run_now("P1 is never deferred")
    if deadline is None:
        return run_now("no deadline: only work that declares slack is deferred")
    deadline = _aware(deadline, name="deadline")
    starts = _candidate_starts(
        now=now, duration_s=duration_s, deadline=deadline, margin_s=margin_s, step_s=step_s
    )
    if not starts:
        return run_now("no later start meets the deadline")

    best: tuple[float, datetime, int] | None = None
    for start in starts:  # time order, then option order: the first of equals is kept
        for k, (option, s) in enumerate(zip(options, series, strict=True)):
            cost = _gco2(
                s, energy_kwh=option.energy_kwh, start=start, duration_s=duration_s, hold=False
            )
            if cost is None:
                continue
            if best is None or cost < best[0] - _TIE * max(1.0, abs(best[0])):
                best = (cost, start, k)
    if best is None:
        return run_now("no later start is covered by the intensity series")
    cost, start, k = best
    if cost >= gco2_now - _TIE * max(1.0, abs(gco2_now)):
        return run_now("running now is already the cleanest feasible start")
    saving = 1.0 - cost / gco2_now
    if saving < min_saving:
        return run_now(f"deferring saves {saving:.1%}, below the {min_saving:.1%} threshold")
    option = options[k]
    return WindowChoice(
        defer=True,
        start_at=start,
        site=option.site,
        pool_id=option.pool_id,
        gco2=cost,
        gco2_now=gco2_now,
        reason=f"starting at {start.isoformat()} on {option.site} saves {saving:.1%}",
    )


def offline_best(
    *,
    now: datetime,
    duration_s: int,
    deadline: datetime | None,
    options: Sequence[SiteOption],
    margin_s: float = 0.0,
    step_s: int = _HOUR_S,
) -> WindowChoice:
    """The cleanest feasible site and start with no threshold: the offline lower bound.

    Pass every pool that could ever take the job (capacity ignored) with perfect-foresight
    series. Tier rules are not applied; a job without a deadline still runs now.
    """
    return plan_window(
        now=now,
        duration_s=duration_s,
        deadline=deadline,
        tier=Tier.P3,
        options=options,
        min_saving=0.0,
        margin_s=margin_s,
        step_s=step_s,
    )
