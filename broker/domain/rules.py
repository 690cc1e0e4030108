"""The feasibility rules: one table that both the explain path and the scheduler's arrays read.

A rule is data, not an `if`: what it reads from the job (`need`, None when the rule does not
apply to the job), what it reads from a pool or its site (`offer`), whether the offer admits
the need (`admits`), and the sentence that explains a rejection (`detail`). Two readers:

- `placement.evaluate` (the explain endpoint) and `placement.static_rejection` walk the table
  pool by pool and name the first rule a pool fails, so the table's order is the order
  reasons are given in;
- `fleet_index.FleetIndex` (the scheduler) turns each rule into a mask over all the pools of
  a pass, once per rule and need: a pass decides thousands of jobs but they have few
  distinct needs. An `elementwise` rule's `admits` uses only arithmetic and comparisons, so
  it is called once with every pool's offer as a numpy array; any other rule's `admits` is
  called once per distinct offer (a handful of GPU models, MIG profile lists, sites).

Either way both paths run the same `admits`, so a rule cannot be written twice or disagree
with itself; `tests/domain/test_rules.py` holds a case per rule that only that rule rejects.

What a rule reads decides how the index caches it (`FromPool`, `FromSite`), and the latency
rules read the round trip from the job's origin to the site (`ROUTE`), which the caller
measures: `SiteConditions.latency_ms` on the explain path, the latency matrix in the index.
Site health is a `live` rule: it says whether a site takes work now, so it is left out when
asking whether a job could ever fit (`static_rejection`, `evaluate(ignore_capacity=True)`).
Capacity is not in the table: whether a pool's nodes hold the job now is `GpuPool.fit`,
which both paths call.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from broker.domain.enums import Ability, Health, JobKind, Tier
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, NodePoolScope, Site
from broker.domain.jobs import JobSpec, Resources
from broker.domain.runtime import reference_model, workload_class
from carbon.performance import OVERRIDE_SETTING, UNIFORM, ThroughputTable, WorkloadClass
from carbon.power import GPU_MODELS

NeedT = TypeVar("NeedT")  # what a rule reads from the job
OfferT = TypeVar("OfferT")  # what it reads from a pool or its site


class RejectReason(enum.StrEnum):
    """Why a pool cannot take a job: the name of a rule, or `CAPACITY` (no room now)."""

    SITE_UNHEALTHY = "site_unhealthy"
    GPU_MODEL = "gpu_model"
    GPU_PERFORMANCE = "gpu_performance"  # no power or throughput figure for the pool's model
    GPU_MEMORY = "gpu_memory"
    MIG_PROFILE = "mig_profile"
    GPUS_PER_NODE = "gpus_per_node"
    NODES = "nodes"
    CPU = "cpu"
    MEMORY = "memory"
    REGION = "region"
    LATENCY_UNKNOWN = "latency_unknown"
    LATENCY_SLO = "latency_slo"
    COST = "max_hourly_cost"
    ABILITY = "site_ability"  # the site's connector cannot run this kind of job
    NODE_POOL = "node_pool"  # the job names a node pool this pool is not in
    NODE_POOL_SCOPE = "node_pool_scope"  # the pool's node pool takes other tiers or kinds
    CAPACITY = "capacity"
    DEADLINE = "deadline"  # the run on this model ends after a deadline another pool meets


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConditions:
    """What the engine knows about a site right now, besides its pools."""

    site: Site
    intensity_gco2_per_kwh: float | None = None
    latency_ms: float | None = None  # from the job's origin; None when unknown or no origin
    # mean intensity over a run of the given seconds from now (runs differ in length by GPU
    # model); None: `intensity_gco2_per_kwh` holds for any run
    intensity_window: Callable[[float], float | None] | None = None

    def intensity_over(self, duration_s: float) -> float | None:
        if self.intensity_window is None:
            return self.intensity_gco2_per_kwh
        return self.intensity_window(duration_s)


# ---- what a rule reads ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FromPool(Generic[OfferT]):
    """The rule reads the pool."""

    get: Callable[[GpuPool], OfferT]

    def of(self, pool: GpuPool, cond: SiteConditions) -> OfferT:
        return self.get(pool)


@dataclass(frozen=True, slots=True)
class FromSite(Generic[OfferT]):
    """The rule reads the pool's site only: the index judges it once per site."""

    get: Callable[[Site], OfferT]

    def of(self, pool: GpuPool, cond: SiteConditions) -> OfferT:
        return self.get(cond.site)


@dataclass(frozen=True, slots=True)
class FromRoute:
    """The rule reads the round trip from the job's origin to the site, in ms, NaN when
    unknown (also when the job has no origin)."""

    def of(self, pool: GpuPool, cond: SiteConditions) -> float:
        return math.nan if cond.latency_ms is None else cond.latency_ms


ROUTE = FromRoute()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule(Generic[NeedT, OfferT]):
    """One reason a pool can never take a job; see the module docstring."""

    reason: RejectReason  # also the rule's name
    need: Callable[[JobSpec], NeedT | None]  # hashable; None: the rule does not apply to the job
    offer: FromPool[OfferT] | FromSite[OfferT] | FromRoute
    admits: Callable[[OfferT, NeedT], bool]
    detail: Callable[[JobSpec, GpuPool, SiteConditions], str]
    elementwise: bool = False  # `admits` also works on numpy arrays of offers
    live: bool = False  # about the site's state now, not whether the job could ever fit


# ---- prices: the cost cap and the ranking's cost term --------------------------------


def pool_price(pool: GpuPool, *, preemptible: bool) -> tuple[float, bool]:
    """USD per GPU-hour and whether it is spot: preemptible work rides the spot market."""
    if preemptible and pool.price_spot is not None:
        return pool.price_spot, True
    return pool.price_on_demand, False


def unit_price(spec: JobSpec, pool: GpuPool) -> tuple[float, bool]:
    return pool_price(pool, preemptible=spec.is_preemptible)


def job_hourly(price: float, milli: int) -> float:
    """USD per hour for `milli` milli-GPUs at `price` per GPU-hour (elementwise too)."""
    return price * milli / MILLI_PER_GPU


def hourly_cost(spec: JobSpec, pool: GpuPool) -> float:
    return job_hourly(unit_price(spec, pool)[0], spec.resources.total_milli)


# ---- the rules ----------------------------------------------------------------------


def needed_abilities(res: Resources) -> tuple[Ability, ...]:
    """What a site's connector must be able to do to run `res`, in the order a rejection
    names the first one it lacks."""
    out = [Ability.DISPATCH]
    if res.nodes > 1:
        out.append(Ability.GANG)
    if res.mig_profile is not None:
        out.append(Ability.MIG)
    if res.gpu_fraction is not None:
        out.append(Ability.FRACTIONAL_GPU)
    return tuple(out)


class CostCap(NamedTuple):
    usd_per_hour: float
    preemptible: bool  # pays the spot price where there is one
    milli: int  # the whole job's milli-GPUs


def _cost_cap(spec: JobSpec) -> CostCap | None:
    if spec.max_hourly_cost is None:
        return None
    return CostCap(spec.max_hourly_cost, spec.is_preemptible, spec.resources.total_milli)


def _within_cap(prices: tuple[float, float], cap: CostCap) -> bool:
    """`prices`: (on-demand, for preemptible work) per GPU-hour."""
    on_demand, preemptible = prices
    price = preemptible if cap.preemptible else on_demand
    return job_hourly(price, cap.milli) <= cap.usd_per_hour


def _both_prices(pool: GpuPool) -> tuple[float, float]:
    return pool_price(pool, preemptible=False)[0], pool_price(pool, preemptible=True)[0]


def _enough(offered: float, need: float) -> bool:
    return offered >= need  # elementwise: `offered` may be the column of every pool's value


def _healthy(health: Health, _: bool) -> bool:
    return health.takes_work


def _able(lacks: frozenset[Ability], needed: tuple[Ability, ...]) -> bool:
    return lacks.isdisjoint(needed)


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names) or "none"


def _first_lacking(spec: JobSpec, site: Site) -> str:
    lacking = next(a for a in needed_abilities(spec.resources) if a in site.lacks)
    return lacking.value


def _in_node_pool(scope: NodePoolScope | None, name: str) -> bool:
    return scope is not None and scope.name == name


def _asked_node_pool(spec: JobSpec, pool: GpuPool) -> str:
    where = f"pool is in node pool {pool.node_pool.name}" if pool.node_pool else "pool is in none"
    return f"job asks node pool {spec.node_pool}, {where}"


def _scope_takes(scope: NodePoolScope | None, need: tuple[Tier, JobKind]) -> bool:
    return scope is None or scope.takes(*need)


def _scope_refuses(spec: JobSpec, pool: GpuPool) -> str:
    scope = pool.node_pool
    assert scope is not None  # the rule admits every pool outside a node pool
    if scope.tiers and spec.tier not in scope.tiers:
        what, taken = "tiers", sorted(t.value for t in scope.tiers)
    else:
        what, taken = "kinds", sorted(k.value for k in scope.kinds)
    return f"node pool {scope.name} takes {what} {', '.join(taken)} only"


def _known(ms: float, _: float) -> bool:
    return ms == ms  # elementwise; NaN (unknown) is the only value unequal to itself


def _within_slo(ms: float, slo: float) -> bool:
    return ms <= slo  # elementwise; an unknown (NaN) latency never meets an SLO


_RULES: tuple[Rule[Any, Any], ...] = (
    Rule(
        reason=RejectReason.SITE_UNHEALTHY,
        need=lambda spec: True,
        offer=FromSite(lambda site: site.health),
        admits=_healthy,
        detail=lambda spec, pool, cond: cond.site.health_reason or cond.site.health.value,
        live=True,
    ),
    Rule(
        reason=RejectReason.GPU_MODEL,
        need=lambda spec: frozenset(spec.resources.gpu_models) or None,
        offer=FromPool(lambda pool: pool.gpu_model),
        admits=lambda model, models: model in models,
        detail=lambda spec, pool, cond: (
            f"pool has {pool.gpu_model}, job wants one of {', '.join(spec.resources.gpu_models)}"
        ),
    ),
    Rule(
        reason=RejectReason.GPU_MEMORY,
        need=lambda spec: spec.resources.min_gpu_memory_gb,
        offer=FromPool(lambda pool: pool.gpu_memory_gb),
        admits=_enough,
        detail=lambda spec, pool, cond: (
            f"{pool.gpu_memory_gb:g} GB per GPU < {spec.resources.min_gpu_memory_gb:g} GB"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.MIG_PROFILE,
        need=lambda spec: spec.resources.mig_profile,
        offer=FromPool(lambda pool: pool.mig_profiles),
        admits=lambda profiles, profile: profile in profiles,
        detail=lambda spec, pool, cond: (
            f"MIG {spec.resources.mig_profile} not offered ({_listed(pool.mig_profiles)})"
        ),
    ),
    Rule(
        reason=RejectReason.GPUS_PER_NODE,
        need=lambda spec: spec.resources.milli_per_node,
        offer=FromPool(lambda pool: pool.node_capacity_milli),
        admits=_enough,
        detail=lambda spec, pool, cond: (
            f"{spec.resources.gpus} GPUs per node > {pool.gpus_per_node} on this pool"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.NODES,
        need=lambda spec: spec.resources.nodes,
        offer=FromPool(lambda pool: pool.nodes),
        admits=_enough,
        detail=lambda spec, pool, cond: f"{spec.resources.nodes} nodes > {pool.nodes} in this pool",
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.CPU,
        need=lambda spec: spec.resources.cpu,
        offer=FromPool(lambda pool: pool.cpu_per_node),
        admits=_enough,
        detail=lambda spec, pool, cond: (
            f"{spec.resources.cpu:g} CPUs > {pool.cpu_per_node:g} per node"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.MEMORY,
        need=lambda spec: spec.resources.memory_gb,
        offer=FromPool(lambda pool: pool.memory_gb_per_node),
        admits=_enough,
        detail=lambda spec, pool, cond: (
            f"{spec.resources.memory_gb:g} GB > {pool.memory_gb_per_node:g} GB per node"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.ABILITY,
        need=lambda spec: needed_abilities(spec.resources),
        offer=FromSite(lambda site: site.lacks),
        admits=_able,
        detail=lambda spec, pool, cond: (
            f"the site's connector lacks {_first_lacking(spec, cond.site)}"
        ),
    ),
    # Node pools (site-declared, like Kueue ResourceFlavors): an explicit choice, then the
    # tiers and kinds a node pool is kept for. The scope rule reads tier and kind of every
    # job, but admits every pool outside a restricted node pool, so on a fleet without
    # one its mask is "all" and costs nothing per shape.
    Rule(
        reason=RejectReason.NODE_POOL,
        need=lambda spec: spec.node_pool,
        offer=FromPool(lambda pool: pool.node_pool),
        admits=_in_node_pool,
        detail=lambda spec, pool, cond: _asked_node_pool(spec, pool),
    ),
    Rule(
        reason=RejectReason.NODE_POOL_SCOPE,
        need=lambda spec: (spec.tier, spec.kind),
        offer=FromPool(lambda pool: pool.node_pool),
        admits=_scope_takes,
        detail=lambda spec, pool, cond: _scope_refuses(spec, pool),
    ),
    Rule(
        reason=RejectReason.REGION,
        need=lambda spec: spec.allowed_regions or None,
        offer=FromSite(lambda site: site),
        admits=lambda site, regions: site.in_regions(regions),
        detail=lambda spec, pool, cond: (
            f"{cond.site.region} is not in allowed regions {', '.join(spec.allowed_regions)}"
        ),
    ),
    Rule(
        reason=RejectReason.LATENCY_UNKNOWN,
        need=lambda spec: spec.latency_slo_ms,
        offer=ROUTE,
        admits=_known,
        detail=lambda spec, pool, cond: (
            f"no latency known from {spec.origin} to {cond.site.location}"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.LATENCY_SLO,
        need=lambda spec: spec.latency_slo_ms,
        offer=ROUTE,
        admits=_within_slo,
        detail=lambda spec, pool, cond: (
            f"{cond.latency_ms:g} ms from {spec.origin} > SLO {spec.latency_slo_ms:g} ms"
        ),
        elementwise=True,
    ),
    Rule(
        reason=RejectReason.COST,
        need=_cost_cap,
        offer=FromPool(_both_prices),
        admits=_within_cap,
        detail=lambda spec, pool, cond: (
            f"${hourly_cost(spec, pool):.2f}/h > max ${spec.max_hourly_cost:.2f}/h"
        ),
        elementwise=True,
    ),
)

# (reference model, workload class); () when the performance model is off, so that every
# job has the same need (one mask, fewer shapes) and only board power is checked
RunNeed = tuple[str, WorkloadClass] | tuple[()]

# where an operator adds the board power of a model the shipped table lacks
POWER_SETTING = "gpu_models"


def _performance_rule(table: ThroughputTable, power: frozenset[str]) -> Rule[RunNeed, str]:
    """A pool whose model has no board power (always: power is never guessed, a missing
    figure would draw 0 W), or, with the performance model on, no throughput figure for the
    job's class (and no override), is not placeable: it would run at an invented speed."""

    def need(spec: JobSpec) -> RunNeed:
        if table.uniform:
            return ()
        return (reference_model(spec), workload_class(spec.kind))

    def admits(model: str, need: RunNeed) -> bool:
        if model not in power:
            return False
        if not need:
            return True
        reference, workload = need
        return table.knows(model=model, reference=reference, workload=workload)

    def detail(spec: JobSpec, pool: GpuPool, cond: SiteConditions) -> str:
        model = pool.gpu_model
        if model not in power:
            return (
                f"no board power figure for GPU model {model}; set "
                f"{POWER_SETTING}.{model}.board_power_w"
            )
        workload = workload_class(spec.kind)
        missing = next(m for m in (model, reference_model(spec)) if table.get(m, workload) is None)
        return (
            f"no {workload.value} throughput figure for GPU model {missing}; "
            f"set {OVERRIDE_SETTING}.{missing}.{workload.value}"
        )

    return Rule(
        reason=RejectReason.GPU_PERFORMANCE,
        need=need,
        offer=FromPool(lambda pool: pool.gpu_model),
        admits=admits,
        detail=detail,
    )


SHIPPED_POWER = frozenset(GPU_MODELS)


@functools.cache
def rule_table(
    table: ThroughputTable, power: frozenset[str] = SHIPPED_POWER
) -> tuple[Rule[Any, Any], ...]:
    """The rules for a deployment's throughput figures and the GPU models it has a board
    power figure for (`power`): the same table whatever the figures, but for which models
    the performance rule admits."""
    return (*_RULES[:2], _performance_rule(table, power), *_RULES[2:])


RULES = rule_table(UNIFORM)

Applicable = Sequence[tuple[Rule[Any, Any], Any]]


def applicable(
    spec: JobSpec, *, live: bool, rules: tuple[Rule[Any, Any], ...] = RULES
) -> Applicable:
    """The rules that apply to `spec`, in order, each with what it needs; the live ones only
    if `live`."""
    out: list[tuple[Rule[Any, Any], Any]] = []
    for rule in rules:
        if rule.live and not live:
            continue
        need = rule.need(spec)
        if need is not None:
            out.append((rule, need))
    return out


def first_failed(rules: Applicable, pool: GpuPool, cond: SiteConditions) -> Rule[Any, Any] | None:
    """The first of `rules` (from `applicable`) that rejects the pool, or None."""
    for rule, need in rules:
        if not rule.admits(rule.offer.of(pool, cond), need):
            return rule
    return None
