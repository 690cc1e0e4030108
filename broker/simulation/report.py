"""Figures from a replay: waits, completion, allocation, cost, energy, emissions; and the
offline lower bound on emissions (each job alone at its cleanest feasible site and window,
capacity ignored), so the broker's result can be read against both baselines.

The bound ignores capacity, so on a fleet whose clean pools are small no schedule comes near
it. To make that visible rather than a footnote, it also reports, per pool it uses, the
peak number of GPUs its own schedule would hold there at once against the pool's size, and
how much of its emissions sit in pools it overfills.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from broker.domain.deferral import SiteOption, WindowChoice, plan_window
from broker.domain.engine import CarbonOracle, Engine
from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.latency import LatencyMatrix
from broker.domain.placement import Candidate, Rejection, static_rejection
from broker.domain.rules import RejectReason
from broker.simulation.allocation import allocation_while_waiting, check_summary, first_wait
from broker.simulation.runs import (
    Outcome,
    SimJob,
    run_cost,
    run_energy_kwh,
    run_gco2,
    to_job,
)
from broker.simulation.traces import TraceJob


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _dist(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def summarize(
    outcome: Outcome,
    *,
    carbon: CarbonOracle,
    utilisation: float,
    power_kw: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The replay's figures; `power_kw`: the engine's board power per GPU model in kW."""
    jobs = outcome.jobs
    waits: dict[str, list[float]] = {t.value: [] for t in Tier}
    jct: dict[str, list[float]] = {t.value: [] for t in Tier}
    cost = energy = gco2 = 0.0
    misses = unfinished = preemptions = deferred = 0
    by_site: dict[str, list[float]] = {}  # site: [gCO2e, USD, GPU-hours]
    for sj in jobs:
        tier = sj.job.spec.tier.value
        submitted = sj.job.created_at
        if sj.first_start is not None:
            waits[tier].append((sj.first_start - submitted).total_seconds())
        if sj.finish is None:
            unfinished += 1
        else:
            jct[tier].append((sj.finish - submitted).total_seconds())
            deadline = sj.job.spec.deadline
            if deadline is not None and sj.finish > deadline:
                misses += 1
        preemptions += sj.preemptions
        deferred += sj.deferred
        for run in sj.runs:
            run_usd = run_cost(run)
            run_g = run_gco2(run, utilisation=utilisation, carbon=carbon, power_kw=power_kw)
            cost += run_usd
            energy += run_energy_kwh(run, utilisation=utilisation, power_kw=power_kw)
            gco2 += run_g
            site = by_site.setdefault(run.site, [0.0, 0.0, 0.0])
            site[0] += run_g
            site[1] += run_usd
            if run.end is not None:
                site[2] += run.gpus * (run.end - run.start).total_seconds() / 3600
    return {
        "policy": outcome.policy,
        "jobs": len(jobs),
        "unfinished": unfinished,
        "wait_s": {tier: _dist(v) for tier, v in waits.items()},
        "completion_s": {tier: _dist(v) for tier, v in jct.items()},
        "allocation_ratio_mean": _time_weighted(outcome),
        "allocation_while_waiting": allocation_while_waiting(
            outcome.samples, capacity=outcome.capacity_by_model
        ),
        "first_wait": first_wait(
            outcome.samples, start=outcome.start, total_gpus=outcome.total_gpus
        ),
        "final_state_check": check_summary(outcome.checks),
        "cpu_only_jobs": outcome.background,
        "cost_usd": round(cost, 2),
        "energy_kwh": round(energy, 1),
        "kgco2e": round(gco2 / 1000, 4),
        "deadline_misses": misses,
        "preemptions": preemptions,
        "deferred_jobs": deferred,
        "makespan_h": round((outcome.end - outcome.start).total_seconds() / 3600, 2),
        "by_site": {
            name: {
                "kgco2e": round(g / 1000, 4),
                "cost_usd": round(usd, 2),
                "gpu_hours": round(hours, 1),
            }
            for name, (g, usd, hours) in sorted(by_site.items(), key=lambda kv: -kv[1][0])
        },
    }


def _time_weighted(outcome: Outcome) -> float:
    series = outcome.allocation
    if outcome.total_gpus <= 0 or len(series) < 2:
        return 0.0
    area = 0.0
    for (t0, used), (t1, _) in itertools.pairwise(series):
        area += used * (t1 - t0).total_seconds()
    span = (series[-1][0] - series[0][0]).total_seconds()
    return round(area / span / outcome.total_gpus, 4) if span > 0 else 0.0


def emissions_by_hour(
    outcome: Outcome,
    *,
    carbon: CarbonOracle,
    utilisation: float,
    power_kw: Mapping[str, float] | None = None,
) -> list[tuple[datetime, float]]:
    """kgCO2e per clock hour, for charts: each run's energy spread evenly over its time."""
    buckets: dict[datetime, float] = {}
    for sj in outcome.jobs:
        for run in sj.runs:
            if run.end is None or run.end <= run.start:
                continue
            energy = run_energy_kwh(run, utilisation=utilisation, power_kw=power_kw)
            rate = energy / (run.end - run.start).total_seconds()
            for hour, intensity in carbon.hourly(run.zone, start=run.start, end=run.end):
                lo, hi = max(run.start, hour), min(run.end, hour + timedelta(hours=1))
                if hi > lo:
                    buckets[hour] = (
                        buckets.get(hour, 0.0) + rate * (hi - lo).total_seconds() * intensity / 1000
                    )
    return sorted(buckets.items())


def offline_lower_bound(
    jobs: Sequence[SimJob],
    *,
    sites: Sequence[Site],
    pools: Sequence[GpuPool],
    latency: LatencyMatrix,
    carbon: CarbonOracle,
    engine: Engine,
) -> dict[str, Any]:
    """Each job alone at its cleanest feasible pool and start (capacity ignored).

    Besides the total, `by_pool` gives for each pool the bound uses its GPU-hours, kgCO2e and
    the peak GPUs the bound's schedule holds there at once, against the pool's size;
    `over_capacity_share` is the fraction of the bound's emissions in overfilled pools.
    """
    total = 0.0
    infeasible = 0
    size = {p.id: p.total_gpus for p in pools}
    used: dict[str, list[float]] = {}  # pool: [gCO2e, GPU-hours]
    steps: dict[str, list[tuple[datetime, float]]] = {}  # pool: (time, +/- GPUs)
    for sj in jobs:
        job = sj.job
        spec = job.spec
        now = job.created_at
        conds = engine.conditions(spec, sites=sites, latency=latency, carbon=carbon, now=now)
        ev = engine.evaluate(spec, pools=pools, conditions=conds, ignore_capacity=True)
        if not ev.candidates:
            infeasible += 1
            continue
        # one window search per run length (one unless the performance model is on, under
        # which each GPU model runs for its own time), the cleanest of them wins
        by_run: dict[int, list[Candidate]] = {}
        for c in ev.candidates:
            by_run.setdefault(round(c.duration_s), []).append(c)
        best: tuple[float, int, WindowChoice] | None = None
        for run_s, cands in sorted(by_run.items()):
            end = spec.deadline or now + timedelta(seconds=run_s)
            options = [
                SiteOption(
                    site=c.site,
                    pool_id=c.pool_id,
                    energy_kwh=c.energy_kwh,
                    hourly=carbon.hourly(conds[c.site].site.grid_zone, start=now, end=end),
                )
                for c in cands
            ]
            got = plan_window(
                now=now,
                duration_s=run_s,
                deadline=spec.deadline,
                tier=spec.tier,
                options=options,
                min_saving=0.0,
                margin_s=0.0,
            )
            if best is None or got.gco2 < best[0]:
                best = (got.gco2, run_s, got)
        assert best is not None
        _, run_s, choice = best
        # plan_window's choice is never worse than its best run-now option
        total += choice.gco2
        gpus = spec.resources.gpu_equivalents
        entry = used.setdefault(choice.pool_id, [0.0, 0.0])
        entry[0] += choice.gco2
        entry[1] += gpus * run_s / 3600
        finish = choice.start_at + timedelta(seconds=run_s)
        steps.setdefault(choice.pool_id, []).extend([(choice.start_at, gpus), (finish, -gpus)])
    by_pool = {}
    over = 0.0
    for pool_id, (g, hours) in sorted(used.items(), key=lambda kv: -kv[1][0]):
        peak = _peak(steps[pool_id])
        if peak > size[pool_id] + 1e-9:
            over += g
        by_pool[pool_id] = {
            "kgco2e": round(g / 1000, 4),
            "gpu_hours": round(hours, 1),
            "peak_gpus": round(peak, 2),
            "pool_gpus": size[pool_id],
        }
    return {
        "kgco2e": round(total / 1000, 4),
        "infeasible_jobs": infeasible,
        "over_capacity_share": round(over / total, 4) if total > 0 else 0.0,
        "by_pool": by_pool,
    }


SAMPLE_IDS = 5  # job ids kept per reason in summary.json


def unrunnable_jobs(
    trace: Sequence[TraceJob],
    *,
    sites: Sequence[Site],
    pools: Sequence[GpuPool],
    latency: LatencyMatrix,
    engine: Engine,
    start: datetime,
) -> dict[str, Any]:
    """Jobs no pool of the fleet could ever take, even empty, grouped by reason.

    Each job's reason is that of the pool that came closest: the one whose failed rule comes
    latest in the engine's rules (a job asking 16 GPUs a node of an 8-GPU H100 pool is a
    `gpus_per_node` job, not a `gpu_model` one because the other pools are A100s). Each
    reason keeps a count, a few job ids and one rule's detail as an example.
    """
    order = {rule.reason: i for i, rule in enumerate(engine.rules)}
    by_reason: dict[str, dict[str, Any]] = {}
    count = 0
    for t in trace:
        spec = to_job(t, start=start).spec
        conds = engine.conditions(spec, sites=sites, latency=latency, carbon=_NO_CARBON, now=start)
        closest: Rejection | None = None
        for pool in pools:
            cond = conds.get(pool.site)
            if cond is None:
                continue
            rejection = static_rejection(spec, pool, cond, rules=engine.rules)
            if rejection is None:
                closest = None
                break
            if closest is None or order.get(rejection.reason, -1) > order.get(closest.reason, -1):
                closest = rejection
        else:
            if closest is None:  # no pool at all
                closest = Rejection(site="", pool_id="", reason=RejectReason.CAPACITY, detail="")
        if closest is None:
            continue
        count += 1
        entry = by_reason.setdefault(
            closest.reason.value,
            {"count": 0, "job_ids": [], "example": closest.detail or "the fleet has no pools"},
        )
        entry["count"] += 1
        if len(entry["job_ids"]) < SAMPLE_IDS:
            entry["job_ids"].append(t.job_id)
    return {
        "count": count,
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1]["count"])),
    }


class _NoCarbon:
    """Whether a job could ever run asks no intensity."""

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        return []


_NO_CARBON = _NoCarbon()


def _peak(steps: list[tuple[datetime, float]]) -> float:
    """The most GPUs held at once; a job ending at t frees its GPUs before one starting at t."""
    level = peak = 0.0
    for _, delta in sorted(steps, key=lambda s: (s[0], s[1])):
        level += delta
        peak = max(peak, level)
    return peak


def burst_comparison(without: dict[str, Any], with_burst: dict[str, Any]) -> dict[str, Any]:
    """The broker without and with bursting, side by side: spend, waits, emissions."""

    def figures(s: dict[str, Any]) -> dict[str, Any]:
        burst = s.get("burst", {})
        waits = {
            tier: {q: s["wait_s"][tier][q] for q in ("mean", "p95", "p99", "max")}
            for tier in ("P1", "P2")
        }
        return {
            "cloud_spend_usd": burst.get("cloud_spend_usd", 0.0),
            "idle_spend_usd": burst.get("idle_spend_usd", 0.0),
            "instances_started": burst.get("instances_started", 0),
            "instances_alive_at_end": burst.get("instances_alive_at_end", 0),
            "wait_s": waits,
            "kgco2e": s["kgco2e"],
            "job_cost_usd": s["cost_usd"],
            "deadline_misses": s["deadline_misses"],
            "unfinished": s["unfinished"],
            "makespan_h": s["makespan_h"],
        }

    return {"without": figures(without), "with": figures(with_burst)}
