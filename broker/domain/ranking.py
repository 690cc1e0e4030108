"""Scoring a job over the pools its shape could use, and picking the best one with room.

This is `placement.evaluate`'s ranking in array form, for the scheduler's hot path
(`fleet_index.FleetIndex` holds the arrays and calls these functions):

- a `Shape` holds the pools a job shape could use if they were empty, with the terms that
  depend on the shape alone (cost from the price per GPU-hour, latency from the job's
  origin), each min-max normalised over those pools, as `evaluate` normalises over the
  pools that could take the job if they were empty; so scores do not depend on what else
  is full, and the shape's terms are computed once per pass;
- `score` adds the carbon term (board power x PUE x each zone's mean intensity over the
  job's run; the job's own factor, GPUs x hours x utilisation, cancels in the
  normalisation) and weighs the three;
- `choose` takes the best-scoring pool whose nodes hold the job, ties (scores within 1e-9)
  going to the tightest fit (best-fit), then site and pool id, exactly as in `evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.domain.fleet import Demand, GpuPool
from broker.domain.objective import Weights

Floats = np.ndarray[Any, np.dtype[np.float64]]
Ints = np.ndarray[Any, np.dtype[np.int64]]
Bools = np.ndarray[Any, np.dtype[np.bool_]]
# a pool's best-fit nodes for a demand (position in the pool list, demand, node count)
Fit = Callable[[int, Demand, int], tuple[int, ...] | None]

TIE = 1e-9


@dataclass(frozen=True, slots=True, eq=False)  # one object per shape and pass: identity
class Shape:
    """The pools a job shape could use if they were empty, with its shape-only terms."""

    idx: Ints  # positions in FleetIndex.pools
    cost_term: Floats  # from USD per GPU-hour (spot for preemptible work where offered)
    latency: Floats  # ms from the job's origin, NaN when unknown or no origin
    latency_term: Floats
    zone: Ints  # zone position of each pool
    power_pue: Floats  # kW per GPU at the plug (board power x site PUE)
    slow: Floats  # run seconds per second of the job's estimate, by the pool's GPU model
    levels: tuple[float, ...]  # the distinct values of `slow` (one with the model off)
    level_of: Ints  # each pool's position in `levels`


@dataclass(frozen=True, slots=True)
class Ranking:
    """One job's scores over its shape's pools."""

    shape: Shape
    weights: Weights  # normalised
    score: Floats  # scores within TIE of each other are ties, broken by best-fit
    carbon_term: Floats
    intensity: Floats  # per pool: mean intensity over its run (NaN unknown)
    runs: Floats  # per entry of `shape.levels`: run seconds at that speed
    packing_term: Floats | None = None  # per pool, when the packing term is on

    def duration(self, k: int) -> float:
        """Run seconds on the shape's k-th pool."""
        return float(self.runs[int(self.shape.level_of[k])])


@dataclass(frozen=True, slots=True)
class Pick:
    k: int  # position within the shape
    pool: int  # position within FleetIndex.pools
    nodes: tuple[int, ...]


def shape_terms(
    *,
    idx: Ints,
    price: Floats,
    latency: Floats | None,
    by_latency: bool,
    zone: Ints,
    power_pue: Floats,
    slow: Floats | None,
) -> Shape:
    """A shape from its pools (`idx`) and their price per GPU-hour, latency from the job's
    origin (None without one), zone, power and run-time factor; `by_latency`: the job has
    an origin; `slow` None: every pool runs at the estimate's speed (the model off)."""
    lat = np.full(len(idx), math.nan) if latency is None else latency
    levels: tuple[float, ...]
    if slow is None:
        slow, levels, level_of, run_price = (
            np.ones(len(idx)),
            (1.0,),
            np.zeros(len(idx), np.int64),
            price,
        )
    elif len(slow) == 0 or bool((slow == slow[0]).all()):  # one speed
        levels = (float(slow[0]),) if len(slow) else ()
        level_of = np.zeros(len(slow), dtype=np.int64)
        run_price = price  # a common factor does not move a min-max normalisation
    else:
        distinct, inverse = np.unique(slow, return_inverse=True)
        levels = tuple(distinct.tolist())
        level_of = inverse.astype(np.int64).reshape(-1)
        run_price = price * slow
    return Shape(
        idx=idx,
        # price x GPUs x run hours; the job's GPUs x estimated hours is alike for every pool
        cost_term=normalise(run_price),
        latency=lat,
        latency_term=normalise(lat) if by_latency else np.zeros(len(idx), dtype=np.float64),
        zone=zone,
        power_pue=power_pue,
        slow=slow,
        levels=levels,
        level_of=level_of,
    )


def score(
    shape: Shape, *, weights: Weights, fixed: Floats, intensity: Floats, runs: Floats
) -> Ranking:
    """Scores over the shape's pools: `fixed`, the weighted cost and latency terms (which
    depend on the shape alone), plus the carbon term from each pool's run: its length
    (`runs`, per speed level) and the mean intensity over it (`intensity`, per pool)."""
    # gCO2e at each pool up to the job's own factor (GPUs x utilisation), which min-max
    # normalisation cancels: board power x PUE x run-time factor x mean intensity over the
    # run (whole seconds);
    # with one speed the run length is common too
    if len(runs) > 1:  # energy scales exactly with speed (`placement.evaluate`)
        gco2 = shape.power_pue * shape.slow * intensity
    else:
        gco2 = shape.power_pue * intensity
    lo = float(gco2.min()) if len(gco2) else math.nan
    if math.isnan(lo):
        carbon_term = normalise(gco2)
        raw = fixed + weights.carbon * carbon_term
    else:
        span = float(gco2.max()) - lo
        if span == 0:
            carbon_term = np.zeros(len(gco2))
            raw = fixed
        else:
            carbon_term = (gco2 - lo) / span
            raw = fixed + weights.carbon * carbon_term
    return Ranking(
        shape=shape,
        weights=weights,
        score=raw,
        carbon_term=carbon_term,
        intensity=intensity,
        runs=runs,
    )


def choose(
    ranking: Ranking,
    *,
    pools: Sequence[GpuPool],
    room: Bools,
    demand: Demand,
    count: int,
    only: int | None = None,
    late: Bools | None = None,
    fit: Fit | None = None,
) -> Pick | None:
    """The best of `pools` (by position) that holds `count` nodes of `demand` now; ties to
    the tightest fit. `room`: per shape pool, whether some node may hold the demand (see
    `FleetIndex.room`); `late`: per shape pool, its run would miss the deadline
    (`placement.deadline_mask`)."""
    shape = ranking.shape
    if fit is None:

        def fit(i: int, demand: Demand, count: int) -> tuple[int, ...] | None:
            return pools[i].fit(demand, count=count)

    room = room.copy()
    if late is not None:
        room &= ~late
    if only is not None:
        room &= shape.idx == only
    masked = np.where(room, ranking.score, math.inf)
    if count == 1:
        best = masked.min() if len(masked) else math.inf
        if best == math.inf:
            return None
        tied = np.flatnonzero(masked <= best + TIE)
        if len(tied) == 1:
            k = int(tied[0])
            i = int(shape.idx[k])
            nodes = fit(i, demand, 1)
            if nodes is not None:  # room is necessary, not sufficient (CPU, memory)
                return Pick(k=k, pool=i, nodes=nodes)
            room[k] = False
            return choose(
                ranking, pools=pools, room=room, demand=demand, count=count, only=only, fit=fit
            )
        got = _best_fit(tied.tolist(), shape=shape, pools=pools, demand=demand, count=1, fit=fit)
        if got is not None:
            return got
        room[tied] = False
        return choose(
            ranking, pools=pools, room=room, demand=demand, count=count, only=only, fit=fit
        )
    # gang jobs: the largest block is necessary, not sufficient; walk score groups
    order = np.argsort(masked, kind="stable")
    values = masked[order]
    start = 0
    n = int(np.count_nonzero(values < math.inf))
    while start < n:
        end = int(np.searchsorted(values, values[start] + TIE, side="right"))
        ks = order[start:end].tolist()
        got = _best_fit(ks, shape=shape, pools=pools, demand=demand, count=count, fit=fit)
        if got is not None:
            return got
        start = end
    return None


def _best_fit(
    ks: list[int],
    *,
    shape: Shape,
    pools: Sequence[GpuPool],
    demand: Demand,
    count: int,
    fit: Fit,
) -> Pick | None:
    best: tuple[int, str, str] | None = None
    chosen: Pick | None = None
    for k in ks:
        i = int(shape.idx[k])
        pool = pools[i]
        nodes = fit(i, demand, count)
        if nodes is None:
            continue
        key = (pool.leftover_after(nodes, demand), pool.site, pool.id)
        if best is None or key < best:
            best, chosen = key, Pick(k=k, pool=i, nodes=nodes)
    return chosen


def normalise(values: Floats) -> Floats:
    """Min-max to [0, 1]; unknown (NaN) counts as the worst (1), all-equal as 0."""
    if len(values) == 0:
        return values.astype(np.float64)
    lo = float(values.min())  # NaN when any value is unknown
    if not math.isnan(lo):
        span = float(values.max()) - lo
        return np.zeros(len(values)) if span == 0 else (values - lo) / span
    known = ~np.isnan(values)
    if not known.any():
        return np.zeros(len(values), dtype=np.float64)
    lo, hi = float(values[known].min()), float(values[known].max())
    span = hi - lo
    out = np.zeros(len(values)) if span == 0 else (values - lo) / span
    return np.where(known, out, 1.0)
