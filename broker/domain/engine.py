"""The scheduling engine: one pure pass from (queue, fleet, running work, carbon) to decisions.

The service's scheduling loop and the trace-replay simulator both call `Engine.plan` and
only differ in how they apply its decisions (atomic database commits and connector calls,
or in-memory state in virtual time), so what the simulator measures is what the broker
does. A pass:

1. orders the queue: tier first (P1, P2, P3), then dominant-resource fair share between
   tenants, aged by waiting time so nothing starves (`policy.fairness`);
2. for each job: checks the tenant's quota (`policy.quotas`; over quota it may borrow idle
   GPUs), ranks the feasible pools (`placement.evaluate`, carbon over the job's run
   window), and either places it now, or defers it to a cleaner window that still meets
   its deadline (`deferral`), or — for P1, and for an owner reclaiming borrowed quota —
   preempts the smallest set of lower-tier preemptible work that frees a slot
   (`policy.preemption`);
3. updates its private copy of the ledger after each decision, so later jobs in the pass
   see the capacity earlier ones took.

Decisions are proposals: the caller commits each atomically and may find the world has
moved (another replica), in which case the job is simply looked at again next pass.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from broker.domain import packing as packing_terms
from broker.domain.conditions import Reason
from broker.domain.deferral import run_window_gco2
from broker.domain.enums import Tier
from broker.domain.fleet import Demand, GpuPool, Site
from broker.domain.fleet_index import FleetIndex, NodeCache
from broker.domain.jobs import Job, JobSpec, Resources
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.domain.placement import _POWER_KW, Candidate, Evaluation, evaluate
from broker.domain.policy.fairness import (
    capacity_from_pools,
    dominant_shares,
    order_queue,
    usage_from_running,
)
from broker.domain.policy.preemption import VictimSet, best_preemption
from broker.domain.policy.quotas import QuotaDecision, QuotaLedger, Quotas, check, reclaimable
from broker.domain.ranking import Ranking, Shape
from broker.domain.rules import RejectReason, SiteConditions, rule_table
from broker.domain.work import RunningWork, placed_work
from carbon.performance import UNIFORM, ThroughputTable, shipped_table

Hourly = Sequence[tuple[datetime, float]]


class CarbonOracle(Protocol):
    """Hourly grid intensity by zone, as known at planning time (forecast or replay)."""

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> Hourly:
        """Readings for the hours covering [start, end); empty when the zone is unknown."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    weights: Mapping[Tier, Weights]
    gpu_utilisation: float = 0.8
    preemption: bool = True
    min_runtime_s: float = 300.0  # a just-started job is not preempted before this
    aging_per_hour: float = 0.05  # fair-share credit per hour waited (see policy.fairness)
    urgent_slack_s: float = 6 * 3600.0  # closer to its deadline than this: deadline order
    deferral: bool = True
    deferral_min_saving: float = 0.1  # defer only for at least this fraction less gCO2e
    deferral_margin_s: float = 1800.0  # a deferred job must still end this long before its deadline
    deferral_horizon_h: int = 48  # never look further ahead than this
    quotas: Quotas = field(default_factory=dict)  # see `policy.quotas` and docs/quotas.md
    borrowing: bool = True
    # throughput relative to A100-80GB by model and class ("training", "inference"), for
    # models the shipped table has no figure for; wins over the table
    gpu_throughput: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # run time by GPU model (docs/performance.md); off: every model runs at the estimate's
    # speed and no pool is refused for a missing throughput figure (the behaviour before it)
    gpu_performance: bool = False
    # board power in kW by exact GPU model name (`Settings.power_table()`); a pool whose
    # model is not here is never placed, whether the performance model is on or off
    power_kw: Mapping[str, float] = field(default_factory=lambda: dict(_POWER_KW))
    # the packing term's weight (`broker.domain.packing`), the same for every tier; 0: off
    packing_weight: float = 0.25


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    job: Job
    candidate: Candidate
    borrowed: bool = False
    victims: VictimSet | None = None  # work to preempt first, on the same pool
    quota: QuotaDecision | None = None  # the quota check's figures (None: quotas off)


@dataclass(frozen=True, slots=True, kw_only=True)
class Defer:
    job: Job
    until: datetime
    site: str
    reason: str
    quota: QuotaDecision | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    job: Job
    reason: str
    code: Reason = Reason.NO_CAPACITY  # the condition's reason (`broker.domain.conditions`)
    quota: QuotaDecision | None = None


Decision = Place | Defer | Wait


class Engine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.throughput: ThroughputTable = (
            shipped_table().with_overrides(settings.gpu_throughput)
            if settings.gpu_performance
            else UNIFORM
        )
        self.rules = rule_table(self.throughput, frozenset(settings.power_kw))
        # per pool id, the last pool object a pass indexed and its per-node figures: a
        # pass reuses them for a pool that has not changed since (an identity check, so
        # the decisions never depend on it)
        self._node_cache: NodeCache = {}

    def weights_for(self, spec: JobSpec) -> Weights:
        return spec.objective or self.settings.weights[spec.tier]

    def conditions(
        self,
        spec: JobSpec,
        *,
        sites: Sequence[Site],
        latency: LatencyMatrix,
        carbon: CarbonOracle,
        now: datetime,
    ) -> dict[str, SiteConditions]:
        """Per site: the mean intensity over a run starting now (of the job's estimate, and
        of any length through `intensity_window`: runs differ by GPU model), and RTT."""
        duration = spec.estimated_duration_s
        means: dict[tuple[str, float], float | None] = {}

        def mean(zone: str, seconds: float) -> float | None:
            key = (zone, seconds)
            if key not in means:
                means[key] = _mean_from_now(carbon, zone, now=now, duration_s=seconds)
            return means[key]

        out = {}
        for site in sites:
            zone = site.grid_zone
            out[site.name] = SiteConditions(
                site=site,
                intensity_gco2_per_kwh=mean(zone, duration),
                latency_ms=latency.rtt(spec.origin, site.location) if spec.origin else None,
                intensity_window=functools.partial(mean, zone),
            )
        return out

    def evaluate(
        self,
        spec: JobSpec,
        *,
        pools: Sequence[GpuPool],
        conditions: Mapping[str, SiteConditions],
        ignore_capacity: bool = False,
        explain: bool = True,
        now: datetime | None = None,
        packing: packing_terms.Outlook | None = None,
    ) -> Evaluation:
        """`evaluate` with this engine's weights, utilisation and throughput figures; with
        `now`, deadlines rule out pools too slow to meet them; with `packing` (the
        queue's outlook), the packing term as a pass would add it."""
        return evaluate(
            spec,
            pools=pools,
            conditions=conditions,
            weights=self.weights_for(spec),
            utilisation=self.settings.gpu_utilisation,
            ignore_capacity=ignore_capacity,
            explain=explain,
            throughput=self.throughput,
            rules=self.rules,
            now=now,
            power=self.settings.power_kw,
            packing=packing,
            packing_weight=self.settings.packing_weight,
        )

    def plan(
        self,
        *,
        queue: Sequence[Job],
        pools: Sequence[GpuPool],
        running: Sequence[RunningWork],
        sites: Sequence[Site],
        latency: LatencyMatrix,
        carbon: CarbonOracle,
        now: datetime,
        skip: Callable[[Job], bool] = lambda job: False,
        waiting: Sequence[JobSpec] | Mapping[Resources, int] | None = None,
        usage: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[Decision]:
        """Decide the queue in fair-share order. `waiting`: every job waiting (or how many
        ask for each `Resources`), when the caller leaves some out of `queue` (stuck ones),
        for the packing term's outlook. `usage`: `usage_from_running(running)`, when the
        caller keeps it up to date (the simulator: thousands of runs, a pass per instant)."""
        s = self.settings
        work = list(running)
        capacity = capacity_from_pools(pools)
        if usage is None:
            usage = usage_from_running(work)
        shares = dominant_shares(usage=usage, capacity=capacity)
        ordered = order_queue(
            jobs=list(queue),
            shares=shares,
            now=now,
            aging_per_hour=s.aging_per_hour,
            urgent_slack_s=s.urgent_slack_s,
        )
        decisions: list[Decision] = []
        longest = max((j.spec.estimated_duration_s for j in queue), default=0)
        if s.packing_weight <= 0:
            packing = packing_terms.NO_OUTLOOK
        elif waiting is None:
            packing = packing_terms.Outlook.of([j.spec for j in queue], pools)
        elif isinstance(waiting, Mapping):
            packing = packing_terms.Outlook.of_counts(waiting, pools)
        else:
            packing = packing_terms.Outlook.of(waiting, pools)
        index = self.fleet_index(
            pools=pools,
            sites=sites,
            latency=latency,
            carbon=carbon,
            now=now,
            longest_s=longest,
            packing=packing,
        )
        waits: dict[Shape, tuple[str, Reason]] = {}
        hopeless: set[tuple[Shape, Demand, int, Tier]] = set()  # asks no preemption helps
        # the quota ledger is kept up to date as the pass places work (empty without quotas)
        ledger = QuotaLedger.from_running(work if s.quotas else [])
        for job in ordered:
            if skip(job):
                continue
            spec = job.spec
            gpus = spec.resources.gpu_equivalents
            shape = index.shape(spec)
            quota = check(
                tenant=job.tenant,
                tier=spec.tier,
                gpus=gpus,
                preemptible=spec.is_preemptible,
                ledger=ledger,
                quotas=s.quotas,
                idle_gpus=index.free_gpus(shape) if s.quotas else 0.0,
                borrowing=s.borrowing,
            )
            if not quota.allowed:
                assert quota.code is not None  # a refusal names its reason
                decisions.append(Wait(job=job, reason=quota.reason, code=quota.code, quota=quota))
                continue
            checked = quota if s.quotas else None
            # no pool with a free block for it: no pick, whatever the ranking (capacity only
            # shrinks in a pass but for preemption), so skip ranking a job that must wait
            weights = self.weights_for(spec)
            ranking: Ranking | None = None
            pick = None
            room = index.has_room(shape, spec.resources.demand)
            if room is not None:
                ranking = index.rank(spec, shape, weights, s.gpu_utilisation)
                pick = index.pick(spec, ranking, room=room)
            victims: VictimSet | None = None
            if pick is None:
                # Without quotas, preemption depends on the shape, the ask and the tier
                # alone, and the work it could stop only grows in a pass by placements
                # that come after every P1 job (tier order): a P1 ask that found no
                # victims finds none later in the pass either.
                hope = (shape, spec.resources.demand, spec.resources.nodes, spec.tier)
                chosen = None
                if s.quotas or hope not in hopeless:
                    chosen = self._preempt(job, index.usable(shape), work, ledger, now)
                    if chosen is None and not s.quotas:
                        hopeless.add(hope)
                if chosen is None:
                    if shape not in waits:  # say why once per shape and pass
                        waits[shape] = self.wait_reason_code(spec, index, shape)
                    text, code = waits[shape]
                    decisions.append(Wait(job=job, reason=text, code=code, quota=checked))
                    continue
                pool, victims = chosen
                index.replace(_release(pool, [w for w in work if w.job_id in victims.job_ids]))
                work = [w for w in work if w.job_id not in victims.job_ids]
                if s.quotas:
                    ledger = QuotaLedger.from_running(work)
                if ranking is None:
                    ranking = index.rank(spec, shape, weights, s.gpu_utilisation)
                pick = index.pick(spec, ranking, only=index.position[pool.id])
                if pick is None:  # the policy promised room it could not make
                    decisions.append(
                        Wait(job=job, reason="preemption would not free a slot", quota=checked)
                    )
                    continue
            assert ranking is not None  # a pick comes from a ranking
            if (
                victims is None  # placed without preempting
                and s.deferral
                and spec.deadline is not None
                and spec.tier is not Tier.P1
            ):
                window = index.window(
                    spec,
                    ranking,
                    utilisation=s.gpu_utilisation,
                    horizon_h=s.deferral_horizon_h,
                    min_saving=s.deferral_min_saving,
                    margin_s=s.deferral_margin_s,
                )
                if window is not None:
                    decisions.append(
                        Defer(
                            job=job,
                            until=window.start_at,
                            site=window.site,
                            reason=window.reason,
                            quota=checked,
                        )
                    )
                    continue
            best = index.candidate(spec, ranking, pick, s.gpu_utilisation)
            pool = index.allocate(pick.pool, pick.nodes, spec.resources.demand, best.node_gpus)
            work.append(
                placed_work(
                    job,
                    pool_id=pool.id,
                    gpu_model=pool.gpu_model,
                    nodes=pick.nodes,
                    gpus=best.node_gpus,
                    placed_at=now,
                    started_at=None,
                    borrowed=quota.borrowed,
                )
            )
            if s.quotas:
                ledger = ledger.add(
                    tenant=job.tenant, tier=spec.tier, gpus=gpus, borrowed=quota.borrowed
                )
            decisions.append(
                Place(
                    job=job,
                    candidate=best,
                    borrowed=quota.borrowed,
                    victims=victims,
                    quota=checked,
                )
            )
        return decisions

    def fleet_index(
        self,
        *,
        pools: Sequence[GpuPool],
        sites: Sequence[Site],
        latency: LatencyMatrix,
        carbon: CarbonOracle,
        now: datetime,
        longest_s: float,
        packing: packing_terms.Outlook = packing_terms.NO_OUTLOOK,
    ) -> FleetIndex:
        """The pass's fleet as arrays, with each zone's outlook far enough for the longest
        estimate (`longest_s`) on the slowest model, and for deferral."""
        longest_run = longest_s * self.throughput.spread()
        reach = timedelta(seconds=max(longest_run, (self.settings.deferral_horizon_h + 1) * 3600))
        outlooks = {
            zone: Outlook.of(carbon.hourly(zone, start=now, end=now + reach), start=now)
            for zone in {site.grid_zone for site in sites}
        }

        return FleetIndex(
            pools=pools,
            sites=sites,
            latency=latency,
            outlooks=outlooks,
            mean_fallback=lambda zone, duration_s: _mean_from_now(
                carbon, zone, now=now, duration_s=duration_s
            ),
            now=now,
            throughput=self.throughput,
            rules=self.rules,
            power=self.settings.power_kw,
            packing=packing,
            packing_weight=self.settings.packing_weight,
            node_cache=self._node_cache,
        )

    def wait_reason_code(
        self, spec: JobSpec, index: FleetIndex, shape: Shape
    ) -> tuple[str, Reason]:
        """Why nothing takes the job now (`plan` asks once per shape and pass): the reasons an
        explaining `evaluate` gives (`FleetIndex.wait_reasons`), without its sentences, and
        the condition's reason: no matching pool at all, or no room."""
        reasons = index.wait_reasons(spec, shape)
        return wait_text(reasons), Reason.NO_CAPACITY if reasons else Reason.NO_MATCHING_POOL

    def _preempt(
        self,
        job: Job,
        eligible: Sequence[GpuPool],
        work: Sequence[RunningWork],
        ledger: QuotaLedger,
        now: datetime,
    ) -> tuple[GpuPool, VictimSet] | None:
        """The smallest set of work to preempt on one of `eligible` (pools on healthy sites
        that could take the job if they were empty), or None."""
        s = self.settings
        spec = job.spec
        owner = (
            job.tenant
            if reclaimable(owner_tenant=job.tenant, ledger=ledger, quotas=s.quotas, tier=spec.tier)
            else None
        )
        if not s.preemption or (spec.tier is not Tier.P1 and owner is None):
            return None
        by_pool: dict[str, list[RunningWork]] = {}
        for w in work:
            by_pool.setdefault(w.pool_id, []).append(w)
        return best_preemption(
            demand=spec.resources.demand,
            need_nodes=spec.resources.nodes,
            pools=eligible,
            running_by_pool=by_pool,
            tier=spec.tier,
            now=now,
            min_runtime_s=s.min_runtime_s,
            owner_tenant=owner,
        )


class Outlook:
    """A zone's intensity from `start` on, as prefix sums: the mean over any run starting at
    `start` in O(log hours). Built only from a gap-free hourly series."""

    def __init__(self, bounds: list[float], cum: list[float], values: list[float]) -> None:
        self.bounds = bounds  # seconds after start where each segment begins (+ the end)
        self.cum = cum  # integral of intensity up to each bound (g·s/kWh)
        self.values = values

    @classmethod
    def of(cls, hourly: Hourly, *, start: datetime) -> Outlook | None:
        """None when the series is empty or has holes (callers then integrate directly)."""
        bounds, cum = [0.0], [0.0]
        values: list[float] = []
        previous: datetime | None = None
        for t, v in hourly:
            if previous is not None and t - previous != timedelta(hours=1):
                return None
            previous = t
            seg_end = (t + timedelta(hours=1) - start).total_seconds()
            seg_start = max(0.0, (t - start).total_seconds())
            if seg_end <= seg_start:
                continue
            if not values and seg_start > 0:
                return None  # the series starts after `start`
            values.append(v)
            cum.append(cum[-1] + v * (seg_end - seg_start))
            bounds.append(seg_end)
        return cls(bounds, cum, values) if values else None

    def mean(self, duration_s: float) -> float | None:
        covered = min(duration_s, self.bounds[-1])
        if covered <= 0:
            return None
        i = bisect.bisect_right(self.bounds, covered) - 1
        if i >= len(self.values):
            total = self.cum[-1]
        else:
            total = self.cum[i] + self.values[i] * (covered - self.bounds[i])
        return total / covered


def mean_intensity(hourly: Hourly, *, start: datetime, end: datetime) -> float | None:
    """Mean gCO2e/kWh over [start, end), or over the part of it the series covers."""
    if not hourly or end <= start:
        return None
    covered = min(end, hourly[-1][0] + timedelta(hours=1))
    if covered <= start:
        return None
    return run_window_gco2(
        energy_kwh=1.0, start=start, duration_s=(covered - start).total_seconds(), hourly=hourly
    )


def _mean_from_now(
    carbon: CarbonOracle, zone: str, *, now: datetime, duration_s: float
) -> float | None:
    """A zone's mean intensity over a run of `duration_s` starting now, straight from the
    series (the per-pass outlooks answer the same from prefix sums)."""
    end = now + timedelta(seconds=duration_s)
    return mean_intensity(carbon.hourly(zone, start=now, end=end), start=now, end=end)


def _release(pool: GpuPool, victims: Sequence[RunningWork]) -> GpuPool:
    """The pool without the victims' share, never below zero on a node.

    The loop reads the ledger and the running work in two queries, so another replica's
    change may show in one and not the other; the engine plans on the smaller figure and
    the store's conditional updates settle the truth at commit.
    """
    for v in victims:
        pool = pool.release(v.node_indices, v.gpus(), v.demand)
    return pool


def wait_text(reasons: Collection[RejectReason]) -> str:
    """A Wait's reason from the reasons the pools reject the job for (`Evaluation.rejections`)."""
    if not reasons:
        return "no site offers a matching pool"
    return "no pool can take it now (" + ", ".join(sorted(r.value for r in reasons)) + ")"
