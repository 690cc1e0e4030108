"""The engine's hot path: one fleet snapshot as arrays, ranked per job shape.

`placement.evaluate` is the reference ranking: it walks every pool, explains every
rejection, and answers `POST /v1/placements:explain`. A scheduling pass decides thousands
of jobs against one fleet snapshot, so `FleetIndex` computes the same scores with the work
shared between jobs:

- **Static feasibility** (GPU model, memory, MIG profile, node shape, CPU, memory,
  regions, latency SLO, hourly cost cap, site health) depends on the job's shape, not on
  what is free: it is computed once per shape per pass, as an index array into the pools,
  together with the cost and latency terms, which depend on the shape alone.
- **The carbon term** needs each zone's mean intensity over the job's run window: one
  vector expression over all zones from per-zone prefix sums, cached per duration.
- **Capacity** is one array, the largest free block of each pool, kept up to date as the
  pass allocates; the winner is the best-scoring pool whose nodes hold the job, ties going
  to the tightest fit (best-fit), then site and pool id, exactly as in `evaluate`.
- **Deferral** integrates every zone over every hourly start at once (one array
  expression per duration) and keeps, per zone, the pool that needs the least energy.

Scores are normalised over the pools that could take the job if they were empty, as in
`evaluate`, so the two agree on the winner (a property test holds them to it).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from broker.domain.fleet import MILLI_PER_GPU, GpuPool, Site
from broker.domain.jobs import JobSpec
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.placement import _POWER_KW, Candidate, unit_price

if TYPE_CHECKING:
    from broker.domain.engine import Outlook

Floats = np.ndarray[Any, np.dtype[np.float64]]
Ints = np.ndarray[Any, np.dtype[np.int64]]
Bools = np.ndarray[Any, np.dtype[np.bool_]]

_HOUR_S = 3600
_TIE = 1e-9


@dataclass(frozen=True, slots=True, eq=False)  # one object per shape and pass: identity
class Shape:
    """The pools a job shape could use if they were empty, with its shape-only terms."""

    idx: Ints  # positions in FleetIndex.pools
    cost_term: Floats  # from USD per GPU-hour (spot for preemptible work where offered)
    latency: Floats  # ms from the job's origin, NaN when unknown or no origin
    latency_term: Floats
    zone: Ints  # zone position of each pool
    power_pue: Floats  # kW per GPU at the plug (board power x site PUE)


@dataclass(frozen=True, slots=True)
class Ranking:
    """One job's scores over its shape's pools."""

    shape: Shape
    weights: Weights  # normalised
    score: Floats  # scores within _TIE of each other are ties, broken by best-fit
    carbon_term: Floats
    means: Floats  # mean intensity per zone over the run window (NaN unknown)


@dataclass(frozen=True, slots=True)
class Pick:
    k: int  # position within the shape
    pool: int  # position within FleetIndex.pools
    nodes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Window:
    start_at: datetime
    site: str
    pool_id: str
    saving: float
    reason: str


class FleetIndex:
    """Pools, sites, carbon outlooks and latency of one pass, as arrays."""

    def __init__(
        self,
        *,
        pools: Sequence[GpuPool],
        sites: Sequence[Site],
        latency: LatencyMatrix,
        outlooks: Mapping[str, Outlook | None],
        mean_fallback: Callable[[str, float], float | None],
        now: datetime,
    ) -> None:
        site_by_name = {s.name: s for s in sites}
        kept = [p for p in pools if p.site in site_by_name]
        self.pools: list[GpuPool] = list(kept)
        self.position = {p.id: i for i, p in enumerate(kept)}
        self.sites = list(sites)
        site_pos = {s.name: i for i, s in enumerate(self.sites)}
        self.zones = sorted({s.grid_zone for s in self.sites})
        zone_pos = {z: i for i, z in enumerate(self.zones)}
        self._latency = latency
        self._now = now
        self._mean_fallback = mean_fallback
        self._models: dict[str, int] = {}
        model_ids = [self._models.setdefault(p.gpu_model, len(self._models)) for p in kept]

        def arr(values: Sequence[float]) -> Floats:
            return np.asarray(values, dtype=np.float64)

        self._model = np.asarray(model_ids, dtype=np.int64)
        self._memory_gb = arr([p.gpu_memory_gb for p in kept])
        self._node_milli = np.asarray([p.node_capacity_milli for p in kept], dtype=np.int64)
        self._nodes = np.asarray([p.nodes for p in kept], dtype=np.int64)
        self._cpu = arr([p.cpu_per_node for p in kept])
        self._node_memory = arr([p.memory_gb_per_node for p in kept])
        self._on_demand = arr([p.price_on_demand for p in kept])
        self._spot = arr([math.nan if p.price_spot is None else p.price_spot for p in kept])
        self._site = np.asarray([site_pos[p.site] for p in kept], dtype=np.int64)
        self._zone = np.asarray(
            [zone_pos[site_by_name[p.site].grid_zone] for p in kept], dtype=np.int64
        )
        self._power_pue = arr(
            [_POWER_KW.get(p.gpu_model, 0.0) * site_by_name[p.site].pue for p in kept]
        )
        self._healthy_site = np.asarray([s.health.takes_work for s in self.sites])
        self._healthy_pool = self._healthy_site[self._site]
        self._lacking = any(s.lacks for s in self.sites)
        self._spot_price = np.where(np.isnan(self._spot), self._on_demand, self._spot)
        self._largest_free = np.zeros(len(kept), dtype=np.int64)
        self._free = np.zeros(len(kept), dtype=np.int64)
        for i, p in enumerate(kept):
            self._refresh(i, p)
        self._shapes: dict[tuple[object, ...], Shape] = {}
        self._fixed: dict[tuple[Shape, Weights], Floats] = {}
        self._zone_groups: dict[Shape, _ZoneGroups] = {}
        self._bases: dict[tuple[object, ...], Ints] = {}
        self._plain: dict[tuple[object, ...], Shape] = {}
        self._model_masks: dict[frozenset[str], Bools] = {}
        self._mig_masks: dict[str, Bools] = {}
        self._region_masks: dict[tuple[str, ...], Bools] = {}
        self._origin_latency: dict[str, Floats] = {}
        self._means: dict[float, Floats] = {}
        self._outlooks = [outlooks.get(z) for z in self.zones]
        self._grid = _Grid.of(self._outlooks)
        self._off_grid = [
            z for z in range(len(self.zones)) if self._grid is None or not self._grid.covers(z)
        ]

    # ---- capacity -------------------------------------------------------------------

    def _refresh(self, i: int, pool: GpuPool) -> None:
        used = pool.node_used()
        cap = pool.node_capacity_milli
        self._largest_free[i] = cap - min(used) if used else 0
        self._free[i] = pool.free_milli

    def replace(self, pool: GpuPool) -> None:
        """Take a new version of a pool (after an allocation or a release)."""
        i = self.position[pool.id]
        self.pools[i] = pool
        self._refresh(i, pool)

    def allocate(self, i: int, nodes: tuple[int, ...], milli_per_node: int) -> GpuPool:
        pool = self.pools[i].allocate(nodes, milli_per_node)
        self.pools[i] = pool
        self._refresh(i, pool)
        return pool

    def free_gpus(self, shape: Shape) -> float:
        return float(self._free[shape.idx].sum()) / MILLI_PER_GPU

    def usable(self, shape: Shape) -> list[GpuPool]:
        """The pools on healthy sites that could take the shape if they were empty."""
        return [self.pools[i] for i in shape.idx.tolist()]

    # ---- shapes ---------------------------------------------------------------------

    def shape(self, spec: JobSpec) -> Shape:
        res = spec.resources
        key = (
            frozenset(res.gpu_models),  # the order a job lists its models in does not matter
            res.min_gpu_memory_gb,
            res.mig_profile,
            res.milli_per_node,
            res.nodes,
            res.cpu,
            res.memory_gb,
            spec.is_preemptible,
            spec.allowed_regions,
            spec.origin,
            spec.latency_slo_ms,
            spec.max_hourly_cost,
            res.total_milli if spec.max_hourly_cost is not None else 0,
        )
        got = self._shapes.get(key)
        if got is None:
            got = self._shapes[key] = self._build_shape(spec, key[:8])
        return got

    def _build_shape(self, spec: JobSpec, base_key: tuple[object, ...]) -> Shape:
        res = spec.resources
        base = self._bases.get(base_key)
        if base is None:
            base = self._bases[base_key] = np.flatnonzero(self._base_mask(spec))
        if not (spec.allowed_regions or spec.origin or spec.max_hourly_cost is not None):
            shared = self._plain.get(base_key)
            if shared is None:
                shared = self._plain[base_key] = self._finish_shape(spec, base, None)
            return shared
        # the rest of the checks, on the (much shorter) list the resources allow
        idx = base
        if spec.allowed_regions:
            idx = idx[self._region_mask(spec.allowed_regions)[self._site[idx]]]
        latency = None
        if spec.origin:
            latency = self._origin_latency_of(spec.origin)[self._site[idx]]
            if spec.latency_slo_ms is not None:
                with np.errstate(invalid="ignore"):
                    keep = latency <= spec.latency_slo_ms  # unknown (NaN) never meets an SLO
                idx, latency = idx[keep], latency[keep]
        if spec.max_hourly_cost is not None:
            price = (self._spot_price if spec.is_preemptible else self._on_demand)[idx]
            keep = price * (res.total_milli / MILLI_PER_GPU) <= spec.max_hourly_cost
            idx = idx[keep]
            latency = None if latency is None else latency[keep]
        return self._finish_shape(spec, idx, latency)

    def _base_mask(self, spec: JobSpec) -> Bools:
        """What the job's resources alone rule out, on healthy sites."""
        res = spec.resources
        mask = self._healthy_pool.copy()
        if res.gpu_models:
            mask &= self._model_mask(frozenset(res.gpu_models))
        if res.min_gpu_memory_gb is not None:
            mask &= self._memory_gb >= res.min_gpu_memory_gb
        if res.mig_profile is not None:
            mask &= self._mig_mask(res.mig_profile)
        mask &= self._node_milli >= res.milli_per_node
        mask &= self._nodes >= res.nodes
        mask &= self._cpu >= res.cpu
        mask &= self._node_memory >= res.memory_gb
        if self._lacking:
            able = [s.job_lacks(res) is None for s in self.sites]
            mask &= np.asarray(able, dtype=bool)[self._site]
        return mask

    def _finish_shape(self, spec: JobSpec, idx: Ints, latency: Floats | None) -> Shape:
        """`latency` is per entry of `idx` (ms from the job's origin), None without origin."""
        price = (self._spot_price if spec.is_preemptible else self._on_demand)[idx]
        lat = np.full(len(idx), math.nan) if latency is None else latency
        return Shape(
            idx=idx,
            cost_term=_normalise(price),  # price x GPUs x hours, scaled alike for every pool
            latency=lat,
            latency_term=(_normalise(lat) if spec.origin else np.zeros(len(idx), dtype=np.float64)),
            zone=self._zone[idx],
            power_pue=self._power_pue[idx],
        )

    def _model_mask(self, models: frozenset[str]) -> Bools:
        got = self._model_masks.get(models)
        if got is None:
            ids = [self._models[m] for m in models if m in self._models]
            got = self._model_masks[models] = np.isin(self._model, ids)
        return got

    def _mig_mask(self, profile: str) -> Bools:
        got = self._mig_masks.get(profile)
        if got is None:
            got = self._mig_masks[profile] = np.asarray(
                [profile in p.mig_profiles for p in self.pools], dtype=bool
            )
        return got

    def _region_mask(self, regions: tuple[str, ...]) -> Bools:
        got = self._region_masks.get(regions)
        if got is None:
            got = self._region_masks[regions] = np.asarray(
                [s.in_regions(regions) for s in self.sites], dtype=bool
            )
        return got

    def _origin_latency_of(self, origin: str) -> Floats:
        got = self._origin_latency.get(origin)
        if got is None:
            rtts = [self._latency.rtt(origin, s.location) for s in self.sites]
            got = self._origin_latency[origin] = np.asarray(
                [math.nan if r is None else r for r in rtts], dtype=np.float64
            )
        return got

    # ---- ranking --------------------------------------------------------------------

    def zone_means(self, duration_s: float) -> Floats:
        """Mean intensity per zone over [now, now + duration) (NaN where unknown)."""
        got = self._means.get(duration_s)
        if got is None:
            got = self._grid.means(duration_s) if self._grid is not None else None
            if got is None:
                got = np.full(len(self.zones), math.nan)
            for z in self._off_grid:
                outlook = self._outlooks[z]
                value = (
                    outlook.mean(duration_s)
                    if outlook is not None
                    else self._mean_fallback(self.zones[z], duration_s)
                )
                got[z] = math.nan if value is None else value
            self._means[duration_s] = got
        return got

    def rank(self, spec: JobSpec, shape: Shape, weights: Weights, utilisation: float) -> Ranking:
        w = weights.normalised()
        fixed = self._fixed.get((shape, w))
        if fixed is None:  # the cost and latency part depends on the shape alone
            fixed = w.cost * shape.cost_term + w.latency * shape.latency_term
            self._fixed[(shape, w)] = fixed
        means = self.zone_means(spec.estimated_duration_s)
        # gCO2e at each pool up to the job's own factor (GPUs x hours x utilisation), which
        # min-max normalisation cancels: board power x PUE x mean intensity of the zone
        gco2 = shape.power_pue * means[shape.zone]
        lo = float(gco2.min()) if len(gco2) else math.nan
        if math.isnan(lo):
            carbon_term = _normalise(gco2)
            raw = fixed + w.carbon * carbon_term
        else:
            span = float(gco2.max()) - lo
            if span == 0:
                carbon_term = np.zeros(len(gco2))
                raw = fixed
            else:
                carbon_term = (gco2 - lo) / span
                raw = fixed + w.carbon * carbon_term
        return Ranking(
            shape=shape,
            weights=w,
            score=raw,
            carbon_term=carbon_term,
            means=means,
        )

    def pick(self, spec: JobSpec, ranking: Ranking, *, only: int | None = None) -> Pick | None:
        """The best pool that holds the job now; ties to the tightest fit (best-fit)."""
        res = spec.resources
        per_node, count = res.milli_per_node, res.nodes
        shape = ranking.shape
        room = self._largest_free[shape.idx] >= per_node
        if only is not None:
            room &= shape.idx == only
        masked = np.where(room, ranking.score, math.inf)
        if count == 1:
            best = masked.min() if len(masked) else math.inf
            if best == math.inf:
                return None
            tied = np.flatnonzero(masked <= best + _TIE)
            if len(tied) == 1:
                k = int(tied[0])
                i = int(shape.idx[k])
                nodes = self.pools[i].fit(milli_per_node=per_node, count=1)
                assert nodes is not None  # its largest free block holds the job
                return Pick(k=k, pool=i, nodes=nodes)
            return self._best_fit(tied.tolist(), shape, per_node, count)
        # gang jobs: the largest block is necessary, not sufficient; walk score groups
        order = np.argsort(masked, kind="stable")
        values = masked[order]
        start = 0
        n = int(np.count_nonzero(values < math.inf))
        while start < n:
            end = int(np.searchsorted(values, values[start] + _TIE, side="right"))
            got = self._best_fit(order[start:end].tolist(), shape, per_node, count)
            if got is not None:
                return got
            start = end
        return None

    def _best_fit(self, ks: list[int], shape: Shape, per_node: int, count: int) -> Pick | None:
        best: tuple[int, str, str] | None = None
        chosen: Pick | None = None
        for k in ks:
            i = int(shape.idx[k])
            pool = self.pools[i]
            nodes = pool.fit(milli_per_node=per_node, count=count)
            if nodes is None:
                continue
            key = (pool.leftover_after(nodes, per_node), pool.site, pool.id)
            if best is None or key < best:
                best, chosen = key, Pick(k=k, pool=i, nodes=nodes)
        return chosen

    def candidate(
        self, spec: JobSpec, ranking: Ranking, pick: Pick, utilisation: float
    ) -> Candidate:
        shape, k = ranking.shape, pick.k
        pool = self.pools[pick.pool]
        res = spec.resources
        gpus = res.total_milli / MILLI_PER_GPU
        hours = spec.estimated_duration_s / 3600
        price, spot = unit_price(spec, pool)
        site = self.sites[int(self._site[pick.pool])]
        energy = _POWER_KW.get(pool.gpu_model, 0.0) * gpus * hours * utilisation * site.pue
        intensity = float(ranking.means[int(shape.zone[k])])
        latency = float(shape.latency[k])
        return Candidate(
            site=pool.site,
            pool_id=pool.id,
            gpu_model=pool.gpu_model,
            gpu_milli=res.total_milli,
            nodes=pick.nodes,
            spot=spot,
            price_per_gpu_hour=price,
            hourly_cost_usd=price * gpus,
            cost_usd=price * gpus * hours,
            latency_ms=None if math.isnan(latency) else latency,
            intensity_gco2_per_kwh=None if math.isnan(intensity) else intensity,
            energy_kwh=energy,
            gco2=None if math.isnan(intensity) else energy * intensity,
            leftover_milli=pool.leftover_after(pick.nodes, res.milli_per_node),
            cost_term=float(shape.cost_term[k]),
            latency_term=float(shape.latency_term[k]),
            carbon_term=float(ranking.carbon_term[k]),
            score=float(ranking.score[k]),
        )

    # ---- deferral -------------------------------------------------------------------

    def window(
        self,
        spec: JobSpec,
        ranking: Ranking,
        *,
        utilisation: float,
        horizon_h: int,
        min_saving: float,
        margin_s: float,
    ) -> Window | None:
        """A later start that emits at least `min_saving` less than running now, or None.

        Options are one pool per zone, the one with room now that needs the least energy
        (pools in one zone share its intensity, so the least energy wins there). Starts
        are the hour boundaries after now whose run, plus `margin_s`, ends by the deadline
        and inside the horizon; the cleanest (zone, start) wins, ties to the earlier start,
        then to the zone of the better-ranked pool (the rules of `deferral.plan_window`).
        """
        deadline = spec.deadline
        grid = self._grid
        if deadline is None or grid is None:
            return None
        shape = ranking.shape
        res = spec.resources
        duration = spec.estimated_duration_s
        # latest end a start may have: the deadline less the margin, and the horizon
        horizon = min(deadline, self._now + timedelta(hours=horizon_h))
        limit = min(
            (deadline - self._now).total_seconds() - margin_s,
            _ceil_hour(horizon, self._now),
        )
        valid = grid.starts(duration, limit)
        if valid == 0:
            return None
        groups = self._zone_groups.get(shape)
        if groups is None:
            groups = self._zone_groups[shape] = _ZoneGroups.of(shape, grid)
        if groups.empty:
            return None
        # per zone on the grid, its least-energy pool with room; options in ranking order
        room = self._largest_free[groups.pools] >= res.milli_per_node
        first = np.minimum.reduceat(np.where(room, groups.positions, groups.size), groups.starts)
        ok = first < groups.ends
        if not ok.any():
            return None
        per_zone = groups.order[first[ok]]
        per_zone = per_zone[np.argsort(ranking.score[per_zone], kind="stable")]
        option_zone = shape.zone[per_zone]
        gpus = res.total_milli / MILLI_PER_GPU
        energy = shape.power_pue[per_zone] * (gpus * duration / 3600 * utilisation)
        now_cost = energy * ranking.means[option_zone]
        if np.isnan(now_cost).any():
            return None
        best_now = float(now_cost.min())
        later = (energy / duration)[:, None] * grid.windows(duration, grid.rows[option_zone], valid)
        best = float(later.min())
        if not best < best_now - _TIE * max(1.0, abs(best_now)):
            return None
        saving = 1.0 - best / best_now
        if saving < min_saving:
            return None
        tied = later <= best + _TIE * max(1.0, abs(best))
        column = int(np.flatnonzero(tied.any(axis=0))[0])
        row = int(np.flatnonzero(tied[:, column])[0])
        start_s = grid.start_offset(column)
        start_at = self._now + timedelta(seconds=start_s)
        pool = self.pools[int(shape.idx[int(per_zone[row])])]
        return Window(
            start_at=start_at,
            site=pool.site,
            pool_id=pool.id,
            saving=saving,
            reason=f"starting at {start_at.isoformat()} on {pool.site} saves {saving:.1%}",
        )


@dataclass(frozen=True, slots=True)
class _ZoneGroups:
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
    def of(cls, shape: Shape, grid: _Grid) -> _ZoneGroups:
        on = np.flatnonzero(grid.on[shape.zone])
        order = on[np.lexsort((shape.power_pue[on], shape.zone[on]))]
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


def _ceil_hour(moment: datetime, now: datetime) -> float:
    """Seconds from `now` to the end of the hour containing `moment` (its hourly coverage)."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    end = floor if floor == moment else floor + timedelta(hours=1)
    return (end - now).total_seconds()


def _normalise(values: Floats) -> Floats:
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


class _Grid:
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
    def of(cls, outlooks: Sequence[Outlook | None]) -> _Grid | None:
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
        q, r = divmod(int(duration_s), _HOUR_S)
        segments = int(self._values.shape[1])
        # start h begins segment h + 1; its run ends in segment h + 1 + q (at r seconds)
        covered = max(0, segments - 1 - q if r else segments - q)
        first_end = self._bound_list[1] + duration_s if len(self._bound_list) > 1 else math.inf
        if limit_s < first_end:
            return 0
        return min(covered, int((limit_s - first_end) // _HOUR_S) + 1)

    def windows(self, duration_s: int, rows: Ints, count: int) -> Floats:
        """∫ intensity over [start_h, start_h + duration) for `rows` and the first `count`
        candidate starts (see `starts`)."""
        q, r = divmod(int(duration_s), _HOUR_S)
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
