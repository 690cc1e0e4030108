"""The planner's inputs from the live broker: offers, waiting jobs, the forecast shortfall.

Offers come from each target's inventory: per GPU model and market the shape its connector
would start for that model (cheapest per GPU-hour to a hundredth of a cent, then fewer GPUs,
then name: the rule of both cloud connectors' `cheapest`), at the grid intensity of the
target's zone now.

A waiting job is a pending job that has waited its tier's target and that the scheduler's
own evaluation (`Engine.evaluate` over the fleet as it is) cannot place anywhere now. Which
offers could serve it is decided by the same static checks the scheduler will apply once
the instances have joined: each offer's shape, put on the joined site, must pass
`static_rejection` (model, memory, CPU, region, latency SLO, hourly cost cap, the joined
site's abilities).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from broker.burst.model import Offer, WaitingJob
from broker.domain.engine import CarbonOracle, Engine
from broker.domain.enums import JobState, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job
from broker.domain.latency import LatencyMatrix
from broker.domain.placement import static_rejection
from broker.domain.rules import RejectReason, SiteConditions
from carbon.power import GPU_MODELS
from connectors.base import SiteInventory

# The forecaster's label for demand that any GPU model serves (broker.demand.history); not
# imported from there, which would load scikit-learn with the planner.
ANY_MODEL = "any"


class ShortfallLike(Protocol):
    @property
    def at(self) -> datetime: ...
    @property
    def gpu_model(self) -> str: ...
    @property
    def shortfall(self) -> float: ...


class Outlook(Protocol):
    @property
    def shortfalls(self) -> Sequence[ShortfallLike]: ...


class ShortfallSource(Protocol):
    """The demand forecast against private capacity, hour by hour from now: the service's
    `broker.scheduling.forecaster.DemandService`, built with `quantile=burst.forecast_quantile`."""

    async def outlook(self, *, hours: int) -> Outlook:
        """Per hour of the next `hours` and per GPU model, the GPUs private sites lack."""
        ...


def peak_shortfall(rows: Iterable[ShortfallLike]) -> tuple[dict[str, float], float]:
    """The largest shortfall of each model over the rows' hours, and of any-model demand."""
    by_model: dict[str, float] = {}
    for r in rows:
        by_model[r.gpu_model] = max(by_model.get(r.gpu_model, 0.0), r.shortfall)
    any_model = by_model.pop(ANY_MODEL, 0.0)
    return {m: s for m, s in by_model.items() if s > 0}, any_model


def offers_of(
    inv: SiteInventory,
    *,
    joins: str,
    intensity: float | None,
    power_kw: Mapping[str, float] | None = None,
) -> list[Offer]:
    """The offers of one target: per GPU model and market, the shape its connector picks.
    `power_kw`: board power by model, the deployment's table (`EngineSettings.power_kw`;
    default the shipped datasheet table)."""
    chosen: dict[tuple[str, bool], tuple[tuple[float, int, str], GpuPool, float]] = {}
    for pool in inv.pools:
        for spot, price in ((False, pool.price_on_demand), (True, pool.price_spot)):
            if price is None:
                continue
            rank = (round(price, 4), pool.gpus_per_node, pool.id)
            key = (pool.gpu_model, spot)
            if key not in chosen or rank < chosen[key][0]:
                chosen[key] = (rank, pool, price)
    site = inv.site
    offers = []
    for (model, spot), (_, pool, price) in sorted(chosen.items()):
        kw = (
            power_kw.get(model)
            if power_kw is not None
            else (GPU_MODELS[model].board_power_w / 1000 if model in GPU_MODELS else None)
        )
        offers.append(
            Offer(
                provider_site=site.name,
                joins_site=joins,
                pool_id=pool.id,
                gpu_model=model,
                gpus_per_instance=pool.gpus_per_node,
                price=price,
                spot=spot,
                # an unknown model's power is unknown, and so are its emissions
                intensity_gco2_per_kwh=intensity if kw is not None else None,
                board_power_w=kw * 1000 if kw is not None else 0.0,
                pue=site.pue,
                location=site.location,
            )
        )
    return offers


def waiting_jobs(
    jobs: Sequence[Job],
    *,
    now: datetime,
    engine: Engine,
    sites: Sequence[Site],
    pools: Sequence[GpuPool],
    carbon: CarbonOracle,
    latency: LatencyMatrix,
    offers: Sequence[Offer],
    shapes: Mapping[str, GpuPool],
    wait_targets: Mapping[Tier, float],
) -> list[WaitingJob]:
    """The pending jobs due a burst: waited their tier's target, placeable nowhere now.

    `shapes` holds the targets' inventory pools by id (an offer's shape), `sites` every site
    the scheduler uses, with the abilities its connector lacks.
    """
    by_name = {s.name: s for s in sites}
    out = []
    for job in jobs:
        target = wait_targets.get(job.spec.tier)
        waited = (now - job.updated_at).total_seconds()  # pending since its last transition
        if job.state is not JobState.PENDING or target is None or waited < target:
            continue
        spec = job.spec
        conds = engine.conditions(spec, sites=sites, latency=latency, carbon=carbon, now=now)
        ev = engine.evaluate(spec, pools=[p for p in pools if p.site in conds], conditions=conds)
        if ev.candidates:
            continue  # the scheduler can place it (or its quota holds it): no burst helps
        usable = frozenset(
            o.pool_id
            for o in offers
            if o.joins_site in by_name
            and o.pool_id in shapes
            and could_run(job, shapes[o.pool_id], joined=by_name[o.joins_site], latency=latency)
        )
        res = spec.resources
        out.append(
            WaitingJob(
                id=job.id,
                tenant=job.tenant,
                tier=spec.tier,
                gpu_models=res.gpu_models,
                milli_per_node=res.milli_per_node,
                nodes=res.nodes,
                waited_s=waited,
                estimated_duration_s=float(spec.estimated_duration_s),
                origin=spec.origin,
                blocked=_blocked(r.reason for r in ev.rejections),
                pools=usable,
            )
        )
    return out


def could_run(job: Job, shape: GpuPool, *, joined: Site, latency: LatencyMatrix) -> bool:
    """Whether the job could run on instances of `shape` once they joined `joined`."""
    spec = job.spec
    pool = replace(shape, site=joined.name, nodes=max(shape.nodes, spec.resources.nodes))
    rtt = latency.rtt(spec.origin, joined.location) if spec.origin else None
    cond = SiteConditions(site=joined, latency_ms=rtt)
    return static_rejection(spec, pool, cond) is None


def _blocked(reasons: Iterable[RejectReason]) -> str:
    counts = Counter(reasons)
    if not counts:
        return "no site takes it"
    full = counts.pop(RejectReason.CAPACITY, 0)
    head = f"no room on the {full} pool{'s' if full != 1 else ''} it fits" if full else ""
    rest = ", ".join(f"{r.value} on {n}" for r, n in sorted(counts.items()))
    if head and rest:
        return f"{head} (other pools: {rest})"
    return head or f"no pool fits ({rest})"
