"""The burst planner: from waiting work and the demand forecast to cloud instances to start.

Pure and deterministic: the same inputs give the same plan. Two kinds of demand:

* **Waiting work.** A pending job no pool can take now, that has waited at least its tier's
  wait target and that no unfinished burst is already for. Jobs go most urgent tier first,
  longest wait first. Each job ranks the offers it fits (GPU model, GPUs per node, targets
  whose cluster could run it) by a weighted sum of cost (USD per GPU-hour in the market it
  would buy), carbon (gCO2e per GPU-hour: board power × PUE × the zone's intensity now) and
  latency (from the job's origin), each min-max normalised over that job's candidates (an
  unknown value counts as the worst). It takes the best one the limits allow, and jobs that
  chose the same offer and market share instances (first-fit; a gang job's nodes on
  distinct instances).
* **Forecast shortfall.** GPUs per model the forecast says private capacity will lack within
  the look-ahead, minus the burst GPUs of that model alive or on their way, bought on demand.

Limits, checked as each job or shortfall is added: instances alive plus new within
`max_instances`; new instances this pass within `max_per_action`; today's spend plus what the
new actions are expected to cost (instances × price × (longest job + idle TTL)) within the
global budget; a tenant's spend plus its jobs' share (GPUs × price × (run time + idle TTL))
within its budget. A target and model that refused capacity recently is not offered again
until its failure memory expires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.burst.model import (
    BurstAction,
    Fleet,
    Offer,
    OfferKey,
    Plan,
    Skipped,
    SkipReason,
    WaitingJob,
)
from broker.burst.settings import BurstSettings, BurstWeights
from broker.domain.fleet import MILLI_PER_GPU
from broker.domain.latency import LatencyMatrix


def rank(
    offers: Sequence[Offer], *, weights: BurstWeights, latency: LatencyMatrix, origin: str | None
) -> list[Offer]:
    """`offers` best first by weighted, normalised cost, latency and carbon per GPU-hour;
    ties go to the cheaper, then by name."""
    costs: list[float | None] = [o.price for o in offers]
    carbon = [o.gco2e_per_gpu_hour for o in offers]
    rtts = [latency.rtt(origin, o.location) if origin else None for o in offers]
    terms = zip(_normalise(costs), _normalise(rtts), _normalise(carbon), strict=True)
    scored = [
        (weights.cost * c + weights.latency * lt + weights.carbon * k, o)
        for (c, lt, k), o in zip(terms, offers, strict=True)
    ]
    scored.sort(key=lambda s: (round(s[0], 9), s[1].price, s[1].provider_site, s[1].pool_id))
    return [o for _, o in scored]


def _normalise(values: list[float | None]) -> list[float]:
    """Min-max to [0, 1]; unknown counts as the worst (1), all equal as 0."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.0 for _ in values]
    lo, span = min(known), max(known) - min(known)
    return [1.0 if v is None else (0.0 if span == 0 else (v - lo) / span) for v in values]


@dataclass(slots=True)
class _Group:
    """Jobs sharing instances of one offer in one market."""

    offer: Offer
    bins: list[int] = field(default_factory=list)  # free milli-GPUs per instance
    jobs: list[WaitingJob] = field(default_factory=list)

    def packed(self, job: WaitingJob) -> list[int]:
        """The bins after adding `job`: first fit, each job node on its own instance."""
        bins = list(self.bins)
        used: set[int] = set()
        for _ in range(job.nodes):
            slot = next(
                (i for i, free in enumerate(bins) if i not in used and free >= job.milli_per_node),
                None,
            )
            if slot is None:
                bins.append(self.offer.gpus_per_instance * MILLI_PER_GPU)
                slot = len(bins) - 1
            bins[slot] -= job.milli_per_node
            used.add(slot)
        return bins

    def expected_usd(self, *, count: int, jobs: Sequence[WaitingJob], idle_ttl_s: float) -> float:
        hours = (max((j.estimated_duration_s for j in jobs), default=0.0) + idle_ttl_s) / 3600
        return self.offer.usd_per_instance_hour * count * hours


@dataclass(slots=True)
class _Tally:
    """What the plan has committed so far, against the limits."""

    new_instances: int = 0
    expected_usd: float = 0.0
    by_tenant: dict[str, float] = field(default_factory=dict)


def plan(
    *,
    now: datetime,
    waiting: Sequence[WaitingJob],
    offers: Sequence[Offer],
    fleet: Fleet,
    settings: BurstSettings,
    latency: LatencyMatrix,
    short_gpus: Mapping[str, float] | None = None,
    short_any_gpus: float = 0.0,
) -> Plan:
    """What to start now; `short_gpus` is the forecast shortfall per GPU model (any-model
    demand, which any model serves, in `short_any_gpus`)."""
    usable = [o for o in offers if fleet.failed_until.get(o.key, now) <= now]
    tally = _Tally()
    groups: dict[tuple[str, bool], _Group] = {}  # by (pool id, spot)
    skipped: list[Skipped] = []
    for job in _due(waiting, fleet=fleet, settings=settings):
        fits = _market([o for o in offers if _fits(job, o)], spot=job.tier in settings.spot_tiers)
        if not fits:
            skipped.append(_skip(SkipReason.NO_OFFER, "no target offers a GPU it fits", job))
            continue
        candidates = [o for o in fits if o in usable]
        if not candidates:
            failed = sorted({f"{o.provider_site} {o.gpu_model}" for o in fits})
            text = f"every target refused recently: {', '.join(failed)}"
            skipped.append(_skip(SkipReason.FAILED_RECENTLY, text, job))
            continue
        ranked = rank(candidates, weights=settings.weights, latency=latency, origin=job.origin)
        refusals: list[Skipped] = []
        for offer in ranked:
            key = (offer.pool_id, offer.spot)
            group = groups.get(key) or _Group(offer=offer)
            refusal = _try_add(job, group, tally=tally, fleet=fleet, settings=settings)
            if refusal is None:
                groups[key] = group
                break
            refusals.append(refusal)
        else:
            skipped.append(refusals[0])  # why the best offer could not be had
    actions = [_wait_action(g, settings=settings) for g in groups.values()]
    forecast, forecast_skips = _forecast_actions(
        short_gpus or {},
        short_any_gpus,
        offers=usable,
        groups=list(groups.values()),
        tally=tally,
        fleet=fleet,
        settings=settings,
        latency=latency,
    )
    return Plan(actions=tuple(actions + forecast), skipped=tuple(skipped + forecast_skips))


def _due(
    waiting: Sequence[WaitingJob], *, fleet: Fleet, settings: BurstSettings
) -> list[WaitingJob]:
    """Jobs past their tier's wait target and not yet burst for, most urgent first."""
    due = [
        j
        for j in waiting
        if j.id not in fleet.covered_jobs
        and j.tier in settings.wait_target_s
        and j.waited_s >= settings.wait_target_s[j.tier]
    ]
    return sorted(due, key=lambda j: (j.tier.rank, -j.waited_s, j.id))


def _fits(job: WaitingJob, offer: Offer) -> bool:
    return (
        (not job.gpu_models or offer.gpu_model in job.gpu_models)
        and job.milli_per_node <= offer.gpus_per_instance * MILLI_PER_GPU
        and (job.pools is None or offer.pool_id in job.pools)
    )


def _market(offers: Sequence[Offer], *, spot: bool) -> list[Offer]:
    """Per target and model, the offer in the wanted market, else the on-demand one."""
    chosen: dict[OfferKey, Offer] = {}
    for o in sorted(offers, key=lambda o: (o.key, o.spot != spot)):
        if o.key not in chosen and (o.spot == spot or not o.spot):
            chosen[o.key] = o
    return list(chosen.values())


def _skip(reason: SkipReason, detail: str, job: WaitingJob) -> Skipped:
    return Skipped(reason=reason, detail=f"job {job.id}: {detail}", job_ids=(job.id,))


def _try_add(
    job: WaitingJob, group: _Group, *, tally: _Tally, fleet: Fleet, settings: BurstSettings
) -> Skipped | None:
    """Add `job` to `group` if every limit allows it (updating the tally); else why not."""
    bins = group.packed(job)
    added = len(bins) - len(group.bins)
    if fleet.instances + tally.new_instances + added > settings.max_instances:
        return _skip(
            SkipReason.MAX_INSTANCES,
            f"{fleet.instances + tally.new_instances} burst instances alive or planned, "
            f"max {settings.max_instances}",
            job,
        )
    if tally.new_instances + added > settings.max_per_action:
        return _skip(
            SkipReason.MAX_BURST,
            f"this pass already starts {tally.new_instances} instances, "
            f"max {settings.max_per_action}",
            job,
        )
    ttl = settings.idle_ttl_s
    before = group.expected_usd(count=len(group.bins), jobs=group.jobs, idle_ttl_s=ttl)
    after = group.expected_usd(count=len(bins), jobs=[*group.jobs, job], idle_ttl_s=ttl)
    expected = tally.expected_usd - before + after
    cap = settings.budget_usd_per_day
    if cap is not None and fleet.spent_usd + expected > cap:
        return _skip(
            SkipReason.BUDGET,
            f"${fleet.spent_usd:.2f} spent today + ${expected:.2f} expected > ${cap:.2f}/day",
            job,
        )
    share = group.offer.price * job.gpus * (job.estimated_duration_s + ttl) / 3600
    tenant_cap = settings.tenant_budget_usd_per_day.get(job.tenant)
    spent = fleet.spent_by_tenant.get(job.tenant, 0.0)
    committed = tally.by_tenant.get(job.tenant, 0.0) + share
    if tenant_cap is not None and spent + committed > tenant_cap:
        return _skip(
            SkipReason.TENANT_BUDGET,
            f"tenant {job.tenant}: ${spent:.2f} spent today + ${committed:.2f} expected > "
            f"${tenant_cap:.2f}/day",
            job,
        )
    group.bins, group.jobs = bins, [*group.jobs, job]
    tally.new_instances += added
    tally.expected_usd = expected
    tally.by_tenant[job.tenant] = committed
    return None


def _wait_action(group: _Group, *, settings: BurstSettings) -> BurstAction:
    jobs, offer = group.jobs, group.offer
    gpus = sum(j.gpus for j in jobs)
    tenants: dict[str, float] = {}
    for j in jobs:
        tenants[j.tenant] = tenants.get(j.tenant, 0.0) + j.gpus / gpus
    tiers = "/".join(sorted({j.tier.value for j in jobs}))
    longest = max(jobs, key=lambda j: j.waited_s)
    target = settings.wait_target_s[longest.tier]
    reason = (
        f"{len(jobs)} {tiers} job{'s' if len(jobs) > 1 else ''} waited past the wait target "
        f"(longest {_duration(longest.waited_s)}, target {_duration(target)}): "
        f"{longest.blocked}; {_offer_text(offer)}"
    )
    return BurstAction(
        offer=offer,
        count=len(group.bins),
        reason=reason,
        for_jobs=tuple(j.id for j in jobs),
        tenants={t: round(s, 6) for t, s in sorted(tenants.items())},
        expected_usd=group.expected_usd(
            count=len(group.bins), jobs=jobs, idle_ttl_s=settings.idle_ttl_s
        ),
    )


def _forecast_actions(
    short_gpus: Mapping[str, float],
    short_any_gpus: float,
    *,
    offers: Sequence[Offer],
    groups: Sequence[_Group],
    tally: _Tally,
    fleet: Fleet,
    settings: BurstSettings,
    latency: LatencyMatrix,
) -> tuple[list[BurstAction], list[Skipped]]:
    """On-demand instances for the forecast shortfall not met by burst capacity already."""
    planned: dict[str, float] = {}
    for g in groups:
        planned[g.offer.gpu_model] = planned.get(g.offer.gpu_model, 0.0) + len(g.bins) * (
            g.offer.gpus_per_instance
        )
    demand: list[tuple[str | None, float]] = [
        (m, s) for m, s in sorted(short_gpus.items()) if s > 0
    ]
    if short_any_gpus > 0:
        demand.append((None, short_any_gpus))
    all_burst = sum(fleet.alive_gpus.values()) + sum(planned.values())
    actions: list[BurstAction] = []
    skipped: list[Skipped] = []
    hours = settings.lookahead_h + settings.idle_ttl_s / 3600
    for model, short in demand:
        have = (
            fleet.alive_gpus.get(model, 0.0) + planned.get(model, 0.0)
            if model is not None
            else all_burst
        )
        need = short - have
        if need <= 0:
            continue
        label = model or "any model"
        candidates = [o for o in offers if not o.spot and (model is None or o.gpu_model == model)]
        if not candidates:
            skipped.append(
                Skipped(
                    reason=SkipReason.NO_OFFER,
                    detail=f"forecast short of {need:g} {label} GPUs: no usable offer",
                    gpu_model=model,
                )
            )
            continue
        offer = rank(candidates, weights=settings.weights, latency=latency, origin=None)[0]
        wanted = math.ceil(need / offer.gpus_per_instance)
        count, why = _forecast_room(
            wanted, offer=offer, hours=hours, tally=tally, fleet=fleet, settings=settings
        )
        if why is not None:
            skipped.append(
                Skipped(
                    reason=why,
                    detail=f"forecast short of {need:g} {label} GPUs: "
                    f"{count} of {wanted} instances within the limits",
                    gpu_model=model,
                )
            )
        if count == 0:
            continue
        expected = offer.usd_per_instance_hour * count * hours
        tally.new_instances += count
        tally.expected_usd += expected
        all_burst += count * offer.gpus_per_instance
        planned[offer.gpu_model] = planned.get(offer.gpu_model, 0.0) + (
            count * offer.gpus_per_instance
        )
        actions.append(
            BurstAction(
                offer=offer,
                count=count,
                reason=(
                    f"forecast p{round(settings.forecast_quantile * 100)} demand is "
                    f"{short:g} {label} GPUs over private capacity within "
                    f"{settings.lookahead_h} h, {have:g} burst GPUs on hand; "
                    f"{_offer_text(offer)}"
                ),
                expected_usd=expected,
            )
        )
    return actions, skipped


def _forecast_room(
    wanted: int,
    *,
    offer: Offer,
    hours: float,
    tally: _Tally,
    fleet: Fleet,
    settings: BurstSettings,
) -> tuple[int, SkipReason | None]:
    """How many of `wanted` instances the limits leave room for, and the binding limit."""
    count, why = wanted, None
    room = settings.max_instances - fleet.instances - tally.new_instances
    if room < count:
        count, why = max(0, room), SkipReason.MAX_INSTANCES
    room = settings.max_per_action - tally.new_instances
    if room < count:
        count, why = max(0, room), SkipReason.MAX_BURST
    cap = settings.budget_usd_per_day
    per_instance = offer.usd_per_instance_hour * hours
    if cap is not None and per_instance > 0:
        room = math.floor((cap - fleet.spent_usd - tally.expected_usd) / per_instance)
        if room < count:
            count, why = max(0, room), SkipReason.BUDGET
    return count, why


def _offer_text(offer: Offer) -> str:
    carbon = (
        f"{offer.intensity_gco2_per_kwh:.0f} gCO2e/kWh"
        if offer.intensity_gco2_per_kwh is not None
        else "grid intensity unknown"
    )
    return (
        f"{offer.gpu_model} x{offer.gpus_per_instance} on {offer.provider_site} "
        f"({'spot' if offer.spot else 'on-demand'}) at ${offer.price:.2f}/GPU-h, {carbon}"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def failed_until(
    failures: Sequence[tuple[OfferKey, datetime]], *, memory_s: float
) -> dict[OfferKey, datetime]:
    """When each target and model that failed at the given times may be tried again."""
    out: dict[OfferKey, datetime] = {}
    for key, at in failures:
        until = at + timedelta(seconds=memory_s)
        if key not in out or until > out[key]:
            out[key] = until
    return out
