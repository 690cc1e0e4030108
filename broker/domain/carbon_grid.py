"""The pass's carbon outlooks as arrays: mean intensities per zone, and deferral windows.

`Engine.fleet_index` turns each zone's hourly series into an `Outlook` (prefix sums from
now on). Most zones share one hourly grid, so `CarbonGrid` stacks their prefix sums into
one matrix: the mean intensity of every zone over a run of any length is then one vector
expression (`ZoneCarbon.means`, cached per duration; a zone off the grid asks its own
outlook, or the series itself when it had holes), and deferral integrates every zone over
every hourly start at once (`CarbonGrid.windows`).

`cleanest_start` is `deferral.plan_window` in array form: the options are one pool per zone,
the one with room now that needs the least energy (pools in one zone share its intensity,
so the least energy wins there); the cleanest (zone, start) wins, ties to the earlier
start, then to the zone of the better-ranked pool. A property test holds the two equal.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from broker.domain.ranking import TIE, Bools, Floats, Ints, Ranking, Shape

if TYPE_CHECKING:
    from broker.domain.engine import Outlook

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Window:
    start_at: datetime
    site: str
    pool_id: str
    saving: float
    reason: str


class Start(NamedTuple):
    k: int  # the option's position within the shape
    offset_s: float  # seconds after now
    saving: float  # fraction of the run-now emissions


class ZoneCarbon:
    """Each zone's outlook for one pass, by zone position, with its mean over a run."""

    def __init__(
        self,
        *,
        zones: Sequence[str],
        outlooks: Sequence[Outlook | None],
        mean_fallback: Callable[[str, float], float | None],
    ) -> None:
        self._zones = list(zones)
        self._outlooks = list(outlooks)
        self._mean_fallback = mean_fallback
        self.grid = CarbonGrid.of(self._outlooks)
        self._off_grid = [
            z for z in range(len(self._zones)) if self.grid is None or not self.grid.covers(z)
        ]
        self._means: dict[float, Floats] = {}

    def means(self, duration_s: float) -> Floats:
        """Mean intensity per zone over [now, now + duration) (NaN where unknown)."""
        got = self._means.get(duration_s)
        if got is None:
            got = self.grid.means(duration_s) if self.grid is not None else None
            if got is None:
                got = np.full(len(self._zones), math.nan)
            for z in self._off_grid:
                outlook = self._outlooks[z]
                value = (
                    outlook.mean(duration_s)
                    if outlook is not None
                    else self._mean_fallback(self._zones[z], duration_s)
                )
                got[z] = math.nan if value is None else value
            self._means[duration_s] = got
        return got


def cleanest_start(
    ranking: Ranking,
    *,
    grid: CarbonGrid,
    groups: ZoneGroups,
    room: Bools,
    starts: int,
    duration_s: int,
    energy_per_kw: float,
    min_saving: float,
    now_means: Floats,
) -> Start | None:
    """The (option, start) that emits least, if it saves at least `min_saving` against
    the best option now; None otherwise.

    `room`: per entry of `groups.pools`, whether it holds the job now; `starts`: how many
    candidate starts (`CarbonGrid.starts`); `energy_per_kw`: kWh per kW of a pool's
    `power_pue` (GPUs x estimated hours x utilisation), scaled by each pool's run-time
    factor; `now_means`: per zone, the mean intensity over the estimate from now. Windows
    are the estimate's length on every model (a simplification: the energy is the model's,
    the window the reference run's).
    """
    shape = ranking.shape
    # per zone on the grid, its least-energy pool with room; options in ranking order
    first = np.minimum.reduceat(np.where(room, groups.positions, groups.size), groups.starts)
    ok = first < groups.ends
    if not ok.any():
        return None
    per_zone = groups.order[first[ok]]
    per_zone = per_zone[np.argsort(ranking.score[per_zone], kind="stable")]
    option_zone = shape.zone[per_zone]
    energy = shape.power_pue[per_zone] * shape.slow[per_zone] * energy_per_kw
    now_cost = energy * now_means[option_zone]
    if np.isnan(now_cost).any():
        return None
    best_now = float(now_cost.min())
    later = (energy / duration_s)[:, None] * grid.windows(
        duration_s, grid.rows[option_zone], starts
    )
    best = float(later.min())
    if not best < best_now - TIE * max(1.0, abs(best_now)):
        return None
    saving = 1.0 - best / best_now
    if saving < min_saving:
        return None
    tied = later <= best + TIE * max(1.0, abs(best))
    column = int(np.flatnonzero(tied.any(axis=0))[0])
    row = int(np.flatnonzero(tied[:, column])[0])
    return Start(k=int(per_zone[row]), offset_s=grid.start_offset(column), saving=saving)


@dataclass(frozen=True, slots=True)
class ZoneGroups:
    """A shape's pools on the carbon grid, by zone and, within a zone, least energy first."""

    order: Ints  # positions within the shape
    pools: Ints  # the same, as positions in FleetIndex.pools
    positions: Ints  # 0 .. size - 1
    starts: Ints  # where each zone's group begins
    ends: Ints  # and ends (exclusive)
    size: int

    @property
    def empty(self) -> bool:
        return self.size == 0

    @classmethod
    def of(cls, shape: Shape, grid: CarbonGrid) -> ZoneGroups:
        on = np.flatnonzero(grid.on[shape.zone])
        order = on[np.lexsort((shape.power_pue[on] * shape.slow[on], shape.zone[on]))]
        zones = shape.zone[order]
        starts = np.flatnonzero(np.r_[True, zones[1:] != zones[:-1]]) if len(order) else order
        ends = np.r_[starts[1:], len(order)].astype(np.int64)
        return cls(
            order=order,
            pools=shape.idx[order],
            positions=np.arange(len(order), dtype=np.int64),
            starts=starts.astype(np.int64),
            ends=ends,
            size=len(order),
        )


def ceil_hour(moment: datetime, now: datetime) -> float:
    """Seconds from `now` to the end of the hour containing `moment` (its hourly coverage)."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    end = floor if floor == moment else floor + timedelta(hours=1)
    return (end - now).total_seconds()


class CarbonGrid:
    """The zones whose outlooks share one hourly grid, stacked as prefix sums.

    Row r holds zone `zones[r]`; column j is bound j of the common grid (seconds after
    now where hour segment j begins; bound 0 is now, bound 1 the next hour boundary).
    """

    def __init__(
        self, zones: int, rows: dict[int, int], bounds: Floats, cum: Floats, values: Floats
    ) -> None:
        self._zones = zones
        self.on = np.zeros(zones, dtype=bool)  # by zone position: on this grid
        self.on[list(rows)] = True
        self.rows = np.zeros(zones, dtype=np.int64)  # by zone position: its row (if on)
        self.rows[list(rows)] = list(rows.values())
        self._row_zone = np.asarray(list(rows), dtype=np.int64)
        self._full = len(rows) == zones  # every zone on the grid
        self._bound_list = [float(b) for b in bounds]
        self._spans: dict[int, Floats] = {}
        self._bounds = bounds
        self._cum = cum  # (zones, bounds)
        self._values = values  # (zones, segments)

    @classmethod
    def of(cls, outlooks: Sequence[Outlook | None]) -> CarbonGrid | None:
        groups: dict[tuple[float, ...], list[int]] = {}
        for z, outlook in enumerate(outlooks):
            if outlook is not None:
                groups.setdefault(tuple(outlook.bounds), []).append(z)
        if not groups:
            return None
        bounds, members = max(groups.items(), key=lambda kv: (len(kv[1]), len(kv[0])))
        rows = {z: r for r, z in enumerate(members)}
        cum = np.asarray([outlooks[z].cum for z in members], dtype=np.float64)  # type: ignore[union-attr]
        values = np.asarray([outlooks[z].values for z in members], dtype=np.float64)  # type: ignore[union-attr]
        return cls(len(outlooks), rows, np.asarray(bounds, dtype=np.float64), cum, values)

    def covers(self, zone: int) -> bool:
        return bool(self.on[zone])

    def means(self, duration_s: float) -> Floats | None:
        """Per zone position (NaN off the grid): mean over [0, duration), as Outlook.mean."""
        end = float(self._bounds[-1])
        covered = min(duration_s, end)
        if covered <= 0:
            return None
        i = bisect_right(self._bound_list, covered) - 1
        if i >= self._values.shape[1]:
            totals = self._cum[:, -1]
        else:
            totals = self._cum[:, i] + self._values[:, i] * (covered - float(self._bounds[i]))
        if self._full:
            return (totals / covered)[self.rows]
        out = np.full(self._zones, math.nan)
        out[self._row_zone] = totals / covered
        return out

    def start_offset(self, h: int) -> float:
        """Seconds after now of the h-th hour boundary (the h-th candidate start)."""
        return float(self._bounds[h + 1])

    def starts(self, duration_s: int, limit_s: float) -> int:
        """How many candidate starts (hour boundaries after now, in order) have a run the
        grid covers that ends by `limit_s` (seconds after now)."""
        q, r = divmod(int(duration_s), HOUR_S)
        segments = int(self._values.shape[1])
        # start h begins segment h + 1; its run ends in segment h + 1 + q (at r seconds)
        covered = max(0, segments - 1 - q if r else segments - q)
        first_end = self._bound_list[1] + duration_s if len(self._bound_list) > 1 else math.inf
        if limit_s < first_end:
            return 0
        return min(covered, int((limit_s - first_end) // HOUR_S) + 1)

    def windows(self, duration_s: int, rows: Ints, count: int) -> Floats:
        """∫ intensity over [start_h, start_h + duration) for `rows` and the first `count`
        candidate starts (see `starts`)."""
        q, r = divmod(int(duration_s), HOUR_S)
        base = self._spans.get(q)
        if base is None:  # ∫ over whole hours from each start: one matrix per q
            whole = max(0, self._values.shape[1] - q)
            base = self._spans[q] = (
                self._cum[:, 1 + q : 1 + q + whole] - self._cum[:, 1 : 1 + whole]
            )
        got = base[rows, :count]
        if r:
            got = got + self._values[rows, 1 + q : 1 + q + count] * r
        return got
