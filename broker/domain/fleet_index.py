"""The engine's hot path: one fleet snapshot as arrays, with each job shape's pools cached.

`placement.evaluate` is the reference: it walks every pool, explains every rejection, and
answers `POST /v1/placements:explain`. A scheduling pass decides thousands of jobs against
one fleet snapshot, so `FleetIndex` computes the same decisions with the work shared
between jobs:

- **Static feasibility** comes from the same rule table as `evaluate` (`rules.RULES`). It
  depends on the job's shape, not on what is free, so it is worked out once per shape per
  pass. The shape key is what the rules read from the job (each rule's `need`), plus what
  the shape's terms read (preemptible or not, the origin), so two jobs share a shape
  exactly when no rule and no term can tell them apart (`rule_masks.RuleMasks` turns the
  rules into masks over the pools, once per distinct need). A job is first looked up by
  its raw fields, which is cheaper than asking every rule, then by the rules' needs.
- **Scores** (`ranking`): the cost and latency terms per shape, the carbon term per job
  from each zone's mean intensity over its run (`carbon_grid.ZoneCarbon`).
- **Capacity** is one array, the largest free block of each pool, kept up to date as the
  pass allocates; the winner is the best-scoring pool whose nodes hold the job
  (`ranking.choose`).
- **Why a job waits** is the set of reasons `evaluate(explain=True)` would give, from the
  rule masks and the capacity array, without the per-pool sentences (`wait_reasons`).
- **Deferral** integrates every zone over every hourly start at once
  (`carbon_grid.cleanest_start`).

Scores are normalised over the pools that could take the job if they were empty, as in
`evaluate`, so the two agree on the winner (property tests hold them to it).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from broker.domain import packing as packing_terms
from broker.domain.carbon_grid import (
    CarbonGrid,
    Window,
    ZoneCarbon,
    ZoneGroups,
    ceil_hour,
    cleanest_start,
)
from broker.domain.fleet import MILLI_PER_GPU, Demand, GpuPool, NodeUse, Site
from broker.domain.jobs import JobSpec
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.placement import _POWER_KW, Candidate, deadline_mask
from broker.domain.ranking import (
    Bools,
    Floats,
    Ints,
    Pick,
    Ranking,
    Shape,
    choose,
    score,
    shape_terms,
)
from broker.domain.rule_masks import RuleMasks
from broker.domain.rules import RULES, RejectReason, Rule, RunNeed, pool_price, unit_price
from broker.domain.runtime import scaled_s
from carbon.performance import UNIFORM, ThroughputTable

if TYPE_CHECKING:
    from broker.domain.engine import Outlook

# The fields of a job that its shape may depend on: all but these, which no rule's `need`
# and no shape term reads (tests/domain/test_rules.py holds the rules to it); and
# `RUN_FIELDS`, which only the performance rule reads, and only when the model is on
# (`kind` is not one: the node-pool scope rule reads it always).
NOT_SHAPE_FIELDS = frozenset({"name", "workload", "estimated_duration_s", "deadline", "objective"})
RUN_FIELDS = frozenset({"reference_gpu_model"})
_shape_fields = operator.attrgetter(
    *(f.name for f in dataclasses.fields(JobSpec) if f.name not in NOT_SHAPE_FIELDS)
)
_shape_fields_off = operator.attrgetter(
    *(f.name for f in dataclasses.fields(JobSpec) if f.name not in NOT_SHAPE_FIELDS | RUN_FIELDS)
)


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
        throughput: ThroughputTable | None = None,
        rules: tuple[Rule[Any, Any], ...] = RULES,
        power: Mapping[str, float] | None = None,
        packing: packing_terms.Outlook = packing_terms.NO_OUTLOOK,
        packing_weight: float = 0.0,
        node_cache: NodeCache | None = None,
    ) -> None:
        """`throughput` (default: uniform, the model off) and `power` (kW by GPU model,
        default: the shipped datasheet table) must be those `rules` was built from;
        `packing` and `packing_weight`: the packing term (`broker.domain.packing`);
        `node_cache`: the per-node figures of pools an earlier index saw, reused for the
        very same pool objects (the caller keeps it between passes)."""
        self._node_cache: NodeCache = {} if node_cache is None else node_cache
        self._packing = packing
        self._packing_weight = packing_weight
        self._throughput = throughput if throughput is not None else UNIFORM
        self._power = _POWER_KW if power is None else power
        self._shape_key = _shape_fields_off if self._throughput.uniform else _shape_fields
        self._rule_table = rules
        self._perf_pos = next(
            i for i, r in enumerate(rules) if r.reason is RejectReason.GPU_PERFORMANCE
        )
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

        def arr(values: Sequence[float]) -> Floats:
            return np.asarray(values, dtype=np.float64)

        self._price = {
            preemptible: arr([pool_price(p, preemptible=preemptible)[0] for p in kept])
            for preemptible in (False, True)
        }
        self._site = np.asarray([site_pos[p.site] for p in kept], dtype=np.int64)
        self._zone = np.asarray(
            [zone_pos[site_by_name[p.site].grid_zone] for p in kept], dtype=np.int64
        )
        # a model with no power figure gets 0 here, but the performance rule keeps its
        # pools out of every shape
        self._power_pue = arr(
            [self._power.get(p.gpu_model, 0.0) * site_by_name[p.site].pue for p in kept]
        )
        self._models = sorted({p.gpu_model for p in kept})
        model_pos = {m: i for i, m in enumerate(self._models)}
        self._model = np.asarray([model_pos[p.gpu_model] for p in kept], dtype=np.int64)
        # per pool, the most whole GPUs free on one node, and the most room on one GPU:
        # a job needs one of them at least (necessary, not sufficient, for a fit)
        self._max_whole = np.zeros(len(kept), dtype=np.int64)
        self._max_share = np.zeros(len(kept), dtype=np.int64)
        # and the most CPU (milli) and memory (MiB) free on one node
        self._max_cpu = np.zeros(len(kept), dtype=np.int64)
        self._max_mem = np.zeros(len(kept), dtype=np.int64)
        self._free = np.zeros(len(kept), dtype=np.int64)
        self._fits: list[dict[tuple[Demand, int], tuple[int, ...] | None]] = [{} for _ in kept]
        # per pool, per node: the figures above node by node (`_node_arrays`), so that an
        # allocation updates its nodes and takes the pool's figures with numpy
        self._node_arrays: list[_NodeArrays | None] = [None] * len(kept)
        # on nodes where work runs: the most free whole GPUs, the most room on a partly used
        # GPU (`packing.fragmentation`)
        self._used_whole = np.zeros(len(kept), dtype=np.int64)
        self._used_share = np.zeros(len(kept), dtype=np.int64)
        self._scarcity = arr([packing.scarcity.get(p.gpu_model, 0.0) for p in kept])
        for i, p in enumerate(kept):
            self._refresh(i, p)
        self._shapes: dict[tuple[object, ...], Shape] = {}
        self._by_needs: dict[tuple[object, ...], Shape] = {}
        self._rules = RuleMasks(pools=kept, sites=self.sites, site_of=self._site, rules=rules)
        self._origin_latency: dict[str, Floats] = {}
        self._fixed: dict[tuple[Shape, Weights], Floats] = {}
        self._rankings: dict[tuple[Shape, Weights, int], Ranking] = {}
        self._zone_groups: dict[Shape, ZoneGroups] = {}
        self._carbon = ZoneCarbon(
            zones=self.zones,
            outlooks=[outlooks.get(z) for z in self.zones],
            mean_fallback=mean_fallback,
        )

    # ---- capacity -------------------------------------------------------------------

    def fit(self, i: int, demand: Demand, count: int) -> tuple[int, ...] | None:
        """`GpuPool.fit` of pool `i`, remembered until the pool changes."""
        cache = self._fits[i]
        key = (demand, count)
        if key in cache:
            return cache[key]
        got = cache[key] = self.pools[i].fit(demand, count=count)
        return got

    def _refresh(self, i: int, pool: GpuPool, nodes: tuple[int, ...] | None = None) -> None:
        """Pool `i`'s figures from its ledger: all its nodes, or only `nodes` changed."""
        self._fits[i] = {}
        per = self._node_arrays[i]
        if nodes is None or per is None or len(per[0]) != pool.nodes:
            cached = self._node_cache.get(pool.id)
            if cached is not None and cached[0] is pool:
                per = cast(_NodeArrays, tuple(a.copy() for a in cached[1]))
            else:
                per = _node_arrays(pool.uses())
                self._node_cache[pool.id] = (pool, cast(_NodeArrays, tuple(a.copy() for a in per)))
            self._node_arrays[i] = per
            nodes = None
        if nodes is not None:
            uses = pool.uses()
            for n in nodes:
                _set_node(per, n, uses[n])
        if pool.nodes == 0:
            self._max_whole[i] = self._max_share[i] = self._max_cpu[i] = self._max_mem[i] = 0
            self._used_whole[i] = self._used_share[i] = self._free[i] = 0
            return
        free_whole, best_room, cpu, mem, used, used_whole, used_share = per
        size = pool.size
        self._max_whole[i] = int(free_whole.max()) * MILLI_PER_GPU
        self._max_share[i] = int(best_room.max())
        self._max_cpu[i] = size.cpu_milli - int(cpu.min())
        self._max_mem[i] = size.memory_mb - int(mem.min())
        self._used_whole[i] = int(used_whole.max())
        self._used_share[i] = int(used_share.max())
        self._free[i] = max(0, pool.total_milli - int(used.sum()))

    def room(self, idx: Ints, demand: Demand) -> Bools:
        """Per pool of `idx`, whether some node may hold `demand` (necessary for a fit)."""
        if demand.shared:
            gpu = self._max_share[idx] >= demand.milli
        else:
            gpu = self._max_whole[idx] >= demand.milli
        return (
            gpu
            & (self._max_cpu[idx] >= demand.cpu_milli)
            & (self._max_mem[idx] >= demand.memory_mb)
        )

    def replace(self, pool: GpuPool) -> None:
        """Take a new version of a pool (after an allocation or a release)."""
        i = self.position[pool.id]
        self.pools[i] = pool
        self._refresh(i, pool)

    def allocate(
        self,
        i: int,
        nodes: tuple[int, ...],
        demand: Demand,
        gpus: tuple[tuple[int, ...], ...] | None = None,
    ) -> GpuPool:
        pool = self.pools[i].allocate(nodes, demand, gpus)
        self.pools[i] = pool
        self._refresh(i, pool, nodes)
        return pool

    def _zone_room(self, groups: ZoneGroups, demand: Demand, count: int) -> Bools:
        """Per entry of `groups.pools`, whether it may hold the job now, exact for the
        entries `cleanest_start` looks at (each zone's first with room): the cheap
        per-pool screen, then each zone's first checked node by node until it fits."""
        room = self.room(groups.pools, demand)
        while True:
            first = np.minimum.reduceat(
                np.where(room, groups.positions, groups.size), groups.starts
            )
            bad = [
                e
                for e in first[first < groups.ends].tolist()
                if self.fit(int(groups.pools[e]), demand, count) is None
            ]
            if not bad:
                return room
            room[bad] = False

    def has_room(self, shape: Shape, demand: Demand) -> Bools | None:
        """`room` over the shape's pools when some pool may have a node for `demand`
        (necessary for `pick` to find one), else None."""
        room = self.room(shape.idx, demand)
        return room if room.any() else None

    def free_gpus(self, shape: Shape) -> float:
        return float(self._free[shape.idx].sum()) / MILLI_PER_GPU

    def usable(self, shape: Shape) -> list[GpuPool]:
        """The pools on healthy sites that could take the shape if they were empty."""
        return [self.pools[i] for i in shape.idx.tolist()]

    # ---- shapes: static feasibility from the rule table -----------------------------

    def shape(self, spec: JobSpec) -> Shape:
        key = self._shape_key(spec)
        got = self._shapes.get(key)
        if got is None:
            needs = tuple(rule.need(spec) for rule in self._rule_table)
            by_needs = (needs, spec.is_preemptible, spec.origin)
            got = self._by_needs.get(by_needs)
            if got is None:
                got = self._by_needs[by_needs] = self._build_shape(
                    needs, preemptible=spec.is_preemptible, origin=spec.origin
                )
            self._shapes[key] = got
        return got

    def _build_shape(
        self, needs: tuple[object, ...], *, preemptible: bool, origin: str | None
    ) -> Shape:
        idx = self._rules.admitted(needs)
        latency = self._origin_latency_of(origin)[self._site[idx]] if origin else None
        # the latency rules, on the (much shorter) list the other rules leave
        keep = self._rules.within_reach(needs, latency, len(idx))
        if keep is not None:
            idx = idx[keep]
            latency = None if latency is None else latency[keep]
        run_need = cast(RunNeed, needs[self._perf_pos])
        if run_need:  # the performance model is on
            reference, workload = run_need
            models = self._model[idx]
            factor = np.ones(len(self._models), dtype=np.float64)
            for m in np.unique(models).tolist():  # the rule left only models with a figure
                factor[m] = self._throughput.run_factor(
                    model=self._models[m], reference=reference, workload=workload
                )
            slow: Floats | None = factor[models]
        else:
            slow = None
        return shape_terms(
            idx=idx,
            price=self._price[preemptible][idx],
            latency=latency,
            by_latency=bool(origin),
            zone=self._zone[idx],
            power_pue=self._power_pue[idx],
            slow=slow,
        )

    def _origin_latency_of(self, origin: str) -> Floats:
        got = self._origin_latency.get(origin)
        if got is None:
            rtts = [self._latency.rtt(origin, s.location) for s in self.sites]
            got = self._origin_latency[origin] = np.asarray(
                [math.nan if r is None else r for r in rtts], dtype=np.float64
            )
        return got

    # ---- why a job waits -------------------------------------------------------------

    def wait_reasons(self, spec: JobSpec, shape: Shape) -> set[RejectReason]:
        """The reasons `placement.evaluate(explain=True)` gives over this pass's pools now
        (each pool's first failed rule, no room, too slow for the deadline), as a set."""
        needs = tuple(rule.need(spec) for rule in self._rule_table)
        if spec.origin:
            latency = self._origin_latency_of(spec.origin)[self._site]
        else:
            latency = np.full(len(self.pools), np.nan)
        reasons = self._rules.first_failures(needs, latency)
        res = spec.resources
        demand = res.demand
        roomy = self.room(shape.idx, demand)  # necessary for a fit
        fits = np.zeros(len(shape.idx), dtype=bool)
        for k in np.flatnonzero(roomy).tolist():
            fits[k] = self.fit(int(shape.idx[k]), demand, res.nodes) is not None
        if not fits.all():
            reasons.add(RejectReason.CAPACITY)
        runs = np.asarray(
            [scaled_s(spec.estimated_duration_s, level) for level in shape.levels],
            dtype=np.float64,
        )
        late = deadline_mask(spec, runs, now=self._now)  # per speed level, as `pick` asks
        if late is not None and (late[shape.level_of] & fits).any():
            reasons.add(RejectReason.DEADLINE)
        return reasons

    # ---- ranking --------------------------------------------------------------------

    def zone_means(self, duration_s: float) -> Floats:
        """Mean intensity per zone over [now, now + duration) (NaN where unknown)."""
        return self._carbon.means(duration_s)

    def rank(self, spec: JobSpec, shape: Shape, weights: Weights, utilisation: float) -> Ranking:
        """The job's scores over its shape's pools. Jobs of one shape, weights and estimate
        share one ranking (kept for the pass); the packing term, which moves as the pass
        allocates, is added to it for each job."""
        key = (shape, weights, spec.estimated_duration_s)
        ranking = self._rankings.get(key)
        if ranking is None:
            ranking = self._rankings[key] = self._rank(spec, shape, weights)
        if self._packing_weight <= 0 or self._packing.empty:
            return ranking
        term = self.packing_term(shape.idx, spec.resources.demand)
        return Ranking(
            shape=ranking.shape,
            weights=ranking.weights,
            score=ranking.score + self._packing_weight * term,
            carbon_term=ranking.carbon_term,
            intensity=ranking.intensity,
            runs=ranking.runs,
            packing_term=term,
        )

    def _rank(self, spec: JobSpec, shape: Shape, weights: Weights) -> Ranking:
        w = weights.normalised()
        fixed = self._fixed.get((shape, w))
        if fixed is None:  # the cost and latency part depends on the shape alone
            fixed = w.cost * shape.cost_term + w.latency * shape.latency_term
            self._fixed[(shape, w)] = fixed
        # one run length per distinct speed among the shape's models
        estimate = spec.estimated_duration_s
        levels = shape.levels
        if len(levels) == 1:  # one speed (always: the model off): one mean per zone
            run = scaled_s(estimate, levels[0])
            intensity = self._carbon.means(run)[shape.zone]
            runs = np.asarray([run], dtype=np.float64)
        elif levels:
            lengths = [scaled_s(estimate, level) for level in levels]
            means = np.stack([self._carbon.means(run) for run in lengths])
            intensity = means[shape.level_of, shape.zone]
            runs = np.asarray(lengths, dtype=np.float64)
        else:
            intensity = runs = np.zeros(0, dtype=np.float64)
        return score(shape, weights=w, fixed=fixed, intensity=intensity, runs=runs)

    def packing_term(self, idx: Ints, demand: Demand) -> Floats:
        """`packing.Outlook.term` over the pools of `idx` now (see `broker.domain.packing`)."""
        whole, share = self._used_whole[idx], self._used_share[idx]
        if demand.shared:
            level = np.where(share >= demand.milli, 0.0, np.where(whole >= 1, 0.5, 1.0))
        else:
            level = np.where(whole >= demand.whole_gpus, 0.0, 1.0)
        return (self._scarcity[idx] + self._packing.large_share * level) / 2

    def pick(
        self,
        spec: JobSpec,
        ranking: Ranking,
        *,
        only: int | None = None,
        room: Bools | None = None,
    ) -> Pick | None:
        """The best pool that holds the job now; ties to the tightest fit (best-fit).
        `room`: `self.room` of the shape's pools, when the caller has it already."""
        res = spec.resources
        late = deadline_mask(spec, ranking.runs, now=self._now)  # per speed level
        demand = res.demand
        return choose(
            ranking,
            pools=self.pools,
            fit=self.fit,
            room=self.room(ranking.shape.idx, demand) if room is None else room,
            demand=demand,
            count=res.nodes,
            only=only,
            late=None if late is None else late[ranking.shape.level_of],
        )

    def candidate(
        self, spec: JobSpec, ranking: Ranking, pick: Pick, utilisation: float
    ) -> Candidate:
        shape, k = ranking.shape, pick.k
        pool = self.pools[pick.pool]
        res = spec.resources
        gpus = res.total_milli / MILLI_PER_GPU
        duration = ranking.duration(k)
        hours = spec.estimated_duration_s * float(shape.slow[k]) / 3600  # as in `evaluate`
        price, spot = unit_price(spec, pool)
        site = self.sites[int(self._site[pick.pool])]
        energy = self._power[pool.gpu_model] * gpus * hours * utilisation * site.pue
        intensity = float(ranking.intensity[k])
        latency = float(shape.latency[k])
        return Candidate(
            site=pool.site,
            pool_id=pool.id,
            gpu_model=pool.gpu_model,
            gpu_milli=res.total_milli,
            nodes=pick.nodes,
            node_names=tuple(pool.node_name(n) for n in pick.nodes),
            node_gpus=pool.gpus_on(pick.nodes, res.demand),
            spot=spot,
            price_per_gpu_hour=price,
            hourly_cost_usd=price * gpus,
            cost_usd=price * gpus * hours,
            latency_ms=None if math.isnan(latency) else latency,
            intensity_gco2_per_kwh=None if math.isnan(intensity) else intensity,
            energy_kwh=energy,
            gco2=None if math.isnan(intensity) else energy * intensity,
            leftover_milli=pool.leftover_after(pick.nodes, res.demand),
            duration_s=duration,
            cost_term=float(shape.cost_term[k]),
            latency_term=float(shape.latency_term[k]),
            carbon_term=float(ranking.carbon_term[k]),
            packing_term=0.0 if ranking.packing_term is None else float(ranking.packing_term[k]),
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

        Starts are the hour boundaries after now whose run, plus `margin_s`, ends by the
        deadline and inside the horizon; the options and the tie-breaks are those of
        `carbon_grid.cleanest_start` (the rules of `deferral.plan_window`).
        """
        deadline = spec.deadline
        grid: CarbonGrid | None = self._carbon.grid
        if deadline is None or grid is None:
            return None
        shape = ranking.shape
        res = spec.resources
        duration = spec.estimated_duration_s
        # latest end a start may have: the deadline less the margin, and the horizon
        horizon = min(deadline, self._now + timedelta(hours=horizon_h))
        limit = min(
            (deadline - self._now).total_seconds() - margin_s,
            ceil_hour(horizon, self._now),
        )
        valid = grid.starts(duration, limit)
        if valid == 0:
            return None
        groups = self._zone_groups.get(shape)
        if groups is None:
            groups = self._zone_groups[shape] = ZoneGroups.of(shape, grid)
        if groups.empty:
            return None
        gpus = res.total_milli / MILLI_PER_GPU
        start = cleanest_start(
            ranking,
            grid=grid,
            groups=groups,
            room=self._zone_room(groups, res.demand, res.nodes),
            starts=valid,
            duration_s=duration,
            energy_per_kw=gpus * duration / 3600 * utilisation,
            min_saving=min_saving,
            now_means=self._carbon.means(duration),
        )
        if start is None:
            return None
        start_at = self._now + timedelta(seconds=start.offset_s)
        pool = self.pools[int(shape.idx[start.k])]
        return Window(
            start_at=start_at,
            site=pool.site,
            pool_id=pool.id,
            saving=start.saving,
            reason=f"starting at {start_at.isoformat()} on {pool.site} saves {start.saving:.1%}",
        )


# per node of a pool: free whole GPUs, most room on one GPU, CPU used, memory used, milli
# used, free whole GPUs if in use (else 0), most room on a partly used GPU (else 0)
_NodeArrays = tuple[Ints, Ints, Ints, Ints, Ints, Ints, Ints]
NodeCache = dict[str, tuple[GpuPool, _NodeArrays]]


def _node_row(u: NodeUse) -> tuple[int, int, int, int, int, int, int]:
    """One node's entries of `_NodeArrays`, in their order."""
    used = u.in_use
    return (
        u.free_whole,
        u.best_room,
        u.cpu_milli,
        u.memory_mb,
        u.used_milli,
        u.free_whole if used else 0,
        u.partial_room if used else 0,
    )


def _node_arrays(uses: Sequence[NodeUse]) -> _NodeArrays:
    rows = [_node_row(u) for u in uses]
    table = np.asarray(rows, dtype=np.int64).reshape(len(rows), 7)
    return cast(_NodeArrays, tuple(np.ascontiguousarray(table[:, k]) for k in range(7)))


def _set_node(per: _NodeArrays, n: int, u: NodeUse) -> None:
    for column, value in zip(per, _node_row(u), strict=True):
        column[n] = value
