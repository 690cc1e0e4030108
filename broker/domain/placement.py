"""Where can a job run, and which site is best: pure feasibility and ranking.

`evaluate` looks at every pool, says why each one that cannot take the job is rejected
(the first rule of `rules.RULES` it fails, or no room now), and ranks the rest by a
weighted sum of cost, latency and carbon terms, each min-max normalised over every pool
that could take the job if it were empty (so a site's score does not depend on what else
is full right now). Ties go to the pool the job fills best
(best-fit), so large free blocks stay whole for large jobs. This function answers
`POST /v1/placements:explain`; the scheduler's hot path (`fleet_index.FleetIndex`) reads
the same rule table and computes the same scores with the work shared across a pass, so
what the API explains is what the scheduler does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from broker.domain.fleet import MILLI_PER_GPU, GpuPool
from broker.domain.jobs import JobSpec
from broker.domain.objective import Weights
from broker.domain.packing import Outlook, fragmentation
from broker.domain.ranking import Bools, Floats
from broker.domain.rules import (
    RULES,
    RejectReason,
    Rule,
    SiteConditions,
    applicable,
    first_failed,
    unit_price,
)
from broker.domain.runtime import run_factor, scaled_s
from carbon.performance import UNIFORM, ThroughputTable
from carbon.power import GPU_MODELS, GpuModelSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    site: str
    pool_id: str
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    site: str
    pool_id: str
    gpu_model: str
    gpu_milli: int
    price_per_gpu_hour: float
    hourly_cost_usd: float
    cost_usd: float
    latency_ms: float | None
    intensity_gco2_per_kwh: float | None
    energy_kwh: float
    gco2: float | None
    nodes: tuple[int, ...]  # the pool's nodes chosen (best-fit), one per job node
    spot: bool
    leftover_milli: int  # free room left on the chosen nodes: lower is a tighter fit
    duration_s: float = 0.0  # the run on this pool's GPU model (the estimate, scaled)
    cost_term: float = 0.0
    latency_term: float = 0.0
    carbon_term: float = 0.0
    packing_term: float = 0.0  # `broker.domain.packing`; weighted by `packing_weight`
    score: float = 0.0
    node_names: tuple[str, ...] = ()  # the chosen nodes' names
    node_gpus: tuple[tuple[int, ...], ...] = ()  # the GPUs taken on each


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    candidates: tuple[Candidate, ...]  # best first
    rejections: tuple[Rejection, ...]
    weights: Weights

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def static_rejection(
    spec: JobSpec,
    pool: GpuPool,
    cond: SiteConditions,
    *,
    rules: tuple[Rule[Any, Any], ...] = RULES,
) -> Rejection | None:
    """Why this pool can never take the job whatever else runs there, or None."""
    rule = first_failed(applicable(spec, live=False, rules=rules), pool, cond)
    if rule is None:
        return None
    return Rejection(
        site=pool.site, pool_id=pool.id, reason=rule.reason, detail=rule.detail(spec, pool, cond)
    )


# (pool, conditions, nodes it would use now or None when full, price, spot, cost, energy,
# gCO2e, run seconds, mean intensity over the run)
_Could = tuple[
    GpuPool,
    SiteConditions,
    tuple[int, ...] | None,
    float,
    bool,
    float,
    float,
    float | None,
    float,
    float | None,
]


def power_kw(table: Mapping[str, GpuModelSpec]) -> Mapping[str, float]:
    """Board power in kW by model name, from a power table (`carbon.power.power_table`)."""
    return {name: m.board_power_w / 1000 for name, m in table.items()}


_POWER_KW = power_kw(GPU_MODELS)


def evaluate(
    spec: JobSpec,
    *,
    pools: Sequence[GpuPool],
    conditions: Mapping[str, SiteConditions],
    weights: Weights,
    utilisation: float = 0.8,
    ignore_capacity: bool = False,
    explain: bool = True,
    throughput: ThroughputTable | None = None,
    rules: tuple[Rule[Any, Any], ...] = RULES,
    now: datetime | None = None,
    power: Mapping[str, float] | None = None,
    packing: Outlook | None = None,
    packing_weight: float = 0.0,
) -> Evaluation:
    """Rank every pool for `spec`; with `ignore_capacity`, ask only whether it could ever fit.

    With `packing` and a `packing_weight`, the score adds the packing term
    (`broker.domain.packing`) of each pool as its ledger stands (not with
    `ignore_capacity`).

    With `explain=False` (the scheduler's hot path) rejections are not collected, which
    skips building a reason for each of the many pools of other GPU models. Run time, cost,
    energy and carbon are those of the job's run on each pool's GPU model (`runtime`):
    `throughput` (default: uniform, the model off) and `power` (kW by model, default: the
    shipped datasheet table) must be those `rules` was built from. With
    `now` and a deadline, a pool whose run would end after the deadline is rejected while
    another pool the job could use meets it (`deadline_mask`).
    """
    table = throughput if throughput is not None else UNIFORM
    power_of = _POWER_KW if power is None else power
    rejections: list[Rejection] = []
    res = spec.resources
    need = res.total_milli
    demand = res.demand
    gpus = need / MILLI_PER_GPU
    # Every pool that could take the job if it were empty, with the nodes it would use now
    # (None when it is full): the terms are normalised over all of them, so a site's score
    # does not move when another site fills up, and the scheduler can rank once per pass.
    could: list[_Could] = []
    # site health says nothing of "ever"
    rules_on = applicable(spec, live=not ignore_capacity, rules=rules)
    for pool in pools:
        cond = conditions.get(pool.site)
        if cond is None:
            continue
        rule = first_failed(rules_on, pool, cond)
        if rule is not None:
            if explain:
                rejections.append(
                    Rejection(
                        site=pool.site,
                        pool_id=pool.id,
                        reason=rule.reason,
                        detail=rule.detail(spec, pool, cond),
                    )
                )
            continue
        if ignore_capacity:
            nodes: tuple[int, ...] | None = tuple(range(res.nodes))
        else:
            nodes = pool.fit(demand, count=res.nodes)
        if nodes is None and explain:
            rejections.append(
                Rejection(
                    site=pool.site,
                    pool_id=pool.id,
                    reason=RejectReason.CAPACITY,
                    detail=_capacity_detail(spec, pool),
                )
            )
        factor = run_factor(spec, pool.gpu_model, table)
        assert factor is not None  # the performance rule admits only models with figures
        # cost and energy scale exactly; the run (its carbon window, the deadline) is in
        # whole seconds, as deferral and the simulator step
        duration = float(scaled_s(spec.estimated_duration_s, factor))
        hours = spec.estimated_duration_s * factor / 3600
        energy = power_of[pool.gpu_model] * gpus * hours * utilisation * cond.site.pue
        intensity = cond.intensity_over(duration)
        price, spot = unit_price(spec, pool)
        could.append(
            (
                pool,
                cond,
                nodes,
                price,
                spot,
                price * gpus * hours,
                energy,
                None if intensity is None else energy * intensity,
                duration,
                intensity,
            )
        )
    late = deadline_mask(spec, np.asarray([f[8] for f in could]), now=now)
    if late is not None:
        kept: list[_Could] = []
        for f, is_late in zip(could, late.tolist(), strict=True):
            if is_late and f[2] is not None:
                f = (*f[:2], None, *f[3:])
                if explain:
                    rejections.append(_deadline_rejection(spec, f[0], f[8], now=now))
            kept.append(f)
        could = kept
    w = weights.normalised()
    costs = _normalise([f[5] for f in could])
    lats = _normalise([f[1].latency_ms for f in could])
    carbs = _normalise([f[7] for f in could])
    scored = []
    packs = packing is not None and packing_weight > 0 and not ignore_capacity
    for f, ct, lt, kt in zip(could, costs, lats, carbs, strict=True):
        pool, cond, nodes, price, spot, cost, energy, gco2, duration, intensity = f
        if nodes is None:
            continue
        pt = 0.0
        if packs:
            assert packing is not None
            pt = packing.term(pool.gpu_model, fragmentation(pool.uses(), demand))
        scored.append(
            Candidate(
                node_names=tuple(pool.node_name(i) for i in nodes) if not ignore_capacity else (),
                node_gpus=pool.gpus_on(nodes, demand) if not ignore_capacity else (),
                site=pool.site,
                pool_id=pool.id,
                gpu_model=pool.gpu_model,
                gpu_milli=need,
                nodes=nodes,
                spot=spot,
                price_per_gpu_hour=price,
                hourly_cost_usd=price * gpus,
                cost_usd=cost,
                latency_ms=cond.latency_ms,
                intensity_gco2_per_kwh=intensity,
                energy_kwh=energy,
                gco2=gco2,
                leftover_milli=pool.leftover_after(nodes, demand),
                duration_s=duration,
                cost_term=ct,
                latency_term=lt,
                carbon_term=kt,
                packing_term=pt,
                score=w.cost * ct + w.latency * lt + w.carbon * kt + packing_weight * pt,
            )
        )
    scored.sort(key=lambda c: (round(c.score, 9), c.leftover_milli, c.site, c.pool_id))
    return Evaluation(candidates=tuple(scored), rejections=tuple(rejections), weights=w)


def deadline_mask(spec: JobSpec, durations: Floats, *, now: datetime | None) -> Bools | None:
    """Which runs (`durations`: one per pool the job could use, or one per distinct run
    length) end after the job's deadline, if `now` and a deadline are given; None when that
    rules out none. Only while some run still meets the deadline: once none can, the job is
    late anyway and the deadline does not keep it from running."""
    if now is None or spec.deadline is None or len(durations) < 2:
        return None  # one run length: all late or none, and neither rules a pool out
    late = durations > (spec.deadline - now).total_seconds()
    return late if late.any() and not late.all() else None


def _deadline_rejection(
    spec: JobSpec, pool: GpuPool, duration_s: float, *, now: datetime | None
) -> Rejection:
    assert now is not None and spec.deadline is not None
    ends = now + timedelta(seconds=duration_s)
    return Rejection(
        site=pool.site,
        pool_id=pool.id,
        reason=RejectReason.DEADLINE,
        detail=(
            f"runs {duration_s / 3600:.2f} h on {pool.gpu_model}, ends {ends.isoformat()} "
            f"after the deadline {spec.deadline.isoformat()}"
        ),
    )


def _normalise(values: list[float | None]) -> list[float]:
    """Min-max to [0, 1]; an unknown value counts as the worst (1), all-equal as 0."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.0 for _ in values]
    lo, hi = min(known), max(known)
    span = hi - lo
    return [1.0 if v is None else (0.0 if span == 0 else (v - lo) / span) for v in values]


def _capacity_detail(spec: JobSpec, pool: GpuPool) -> str:
    res = spec.resources
    per_node = res.milli_per_node / MILLI_PER_GPU
    gpu = (
        f"{per_node:g} GPU"
        + ("" if res.shared_gpu else "s")
        + (" free on one GPU" if res.shared_gpu else " free")
    )
    return (
        f"{pool.free_milli / MILLI_PER_GPU:g} GPUs free; job needs {res.nodes} node(s) with "
        f"{gpu}, {res.cpu:g} CPUs and {res.memory_gb:g} GB memory each, "
        f"{pool.fitting(res.demand)} node(s) have that"
    )
