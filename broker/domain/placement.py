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

from broker.domain.fleet import MILLI_PER_GPU, GpuPool
from broker.domain.jobs import JobSpec
from broker.domain.objective import Weights
from broker.domain.rules import (
    RejectReason,
    SiteConditions,
    applicable,
    first_failed,
    unit_price,
)
from carbon.power import GPU_MODELS


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
    cost_term: float = 0.0
    latency_term: float = 0.0
    carbon_term: float = 0.0
    score: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    candidates: tuple[Candidate, ...]  # best first
    rejections: tuple[Rejection, ...]
    weights: Weights

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def static_rejection(spec: JobSpec, pool: GpuPool, cond: SiteConditions) -> Rejection | None:
    """Why this pool can never take the job whatever else runs there, or None."""
    rule = first_failed(applicable(spec, live=False), pool, cond)
    if rule is None:
        return None
    return Rejection(
        site=pool.site, pool_id=pool.id, reason=rule.reason, detail=rule.detail(spec, pool, cond)
    )


# (pool, conditions, nodes it would use now or None when full, price, spot, cost, energy, gCO2e)
_Could = tuple[
    GpuPool, SiteConditions, tuple[int, ...] | None, float, bool, float, float, float | None
]

_POWER_KW = {name: m.board_power_w / 1000 for name, m in GPU_MODELS.items()}


def evaluate(
    spec: JobSpec,
    *,
    pools: Sequence[GpuPool],
    conditions: Mapping[str, SiteConditions],
    weights: Weights,
    utilisation: float = 0.8,
    ignore_capacity: bool = False,
    explain: bool = True,
) -> Evaluation:
    """Rank every pool for `spec`; with `ignore_capacity`, ask only whether it could ever fit.

    With `explain=False` (the scheduler's hot path) rejections are not collected, which
    skips building a reason for each of the many pools of other GPU models.
    """
    rejections: list[Rejection] = []
    res = spec.resources
    need = res.total_milli
    per_node = res.milli_per_node
    hours = spec.estimated_duration_s / 3600
    gpus = need / MILLI_PER_GPU
    # Every pool that could take the job if it were empty, with the nodes it would use now
    # (None when it is full): the terms are normalised over all of them, so a site's score
    # does not move when another site fills up, and the scheduler can rank once per pass.
    could: list[_Could] = []
    rules = applicable(spec, live=not ignore_capacity)  # site health says nothing of "ever"
    for pool in pools:
        cond = conditions.get(pool.site)
        if cond is None:
            continue
        rule = first_failed(rules, pool, cond)
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
            nodes = pool.fit(milli_per_node=per_node, count=res.nodes)
        if nodes is None and explain:
            rejections.append(
                Rejection(
                    site=pool.site,
                    pool_id=pool.id,
                    reason=RejectReason.CAPACITY,
                    detail=_capacity_detail(spec, pool),
                )
            )
        power = _POWER_KW.get(pool.gpu_model, 0.0)
        energy = power * gpus * hours * utilisation * cond.site.pue
        intensity = cond.intensity_gco2_per_kwh
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
            )
        )
    w = weights.normalised()
    costs = _normalise([f[5] for f in could])
    lats = _normalise([f[1].latency_ms for f in could])
    carbs = _normalise([f[7] for f in could])
    scored = []
    for f, ct, lt, kt in zip(could, costs, lats, carbs, strict=True):
        pool, cond, nodes, price, spot, cost, energy, gco2 = f
        if nodes is None:
            continue
        scored.append(
            Candidate(
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
                intensity_gco2_per_kwh=cond.intensity_gco2_per_kwh,
                energy_kwh=energy,
                gco2=gco2,
                leftover_milli=pool.leftover_after(nodes, per_node),
                cost_term=ct,
                latency_term=lt,
                carbon_term=kt,
                score=w.cost * ct + w.latency * lt + w.carbon * kt,
            )
        )
    scored.sort(key=lambda c: (round(c.score, 9), c.leftover_milli, c.site, c.pool_id))
    return Evaluation(candidates=tuple(scored), rejections=tuple(rejections), weights=w)


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
    roomy = sum(
        1 for used in pool.node_used() if pool.node_capacity_milli - used >= res.milli_per_node
    )
    return (
        f"{pool.free_milli / MILLI_PER_GPU:g} GPUs free; job needs {res.nodes} node(s) with "
        f"{per_node:g} GPUs free each, {roomy} node(s) have that"
    )
