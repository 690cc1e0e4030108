"""A submitted job evaluated as the scheduler would now: the answer of `GET /v1/jobs/{id}/explain`.

Not a second model of the scheduler: it runs `Engine.plan` itself, on the queue as it is,
with the job in it, deciding only the jobs ahead of it in the pass's order and the job
(`plan`'s `skip`), so the capacity and quota those ahead would take is taken first, as in
a pass. What it adds is the context a pass does not keep: the job's place in fair-share
order and its tenant's dominant share, the quota check's figures (from the decision), the
deferral outcome, and the work a placement would preempt with what that costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from broker.domain.conditions import Reason
from broker.domain.engine import CarbonOracle, Defer, Engine, Place, Wait
from broker.domain.enums import JobState, Tier
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, Site
from broker.domain.jobs import Job
from broker.domain.latency import LatencyMatrix
from broker.domain.policy.fairness import (
    capacity_from_pools,
    dominant_shares,
    order_queue,
    usage_from_running,
)
from broker.domain.policy.quotas import QuotaDecision
from broker.domain.work import RunningWork


@dataclass(frozen=True, slots=True, kw_only=True)
class Victim:
    """Running work a placement would preempt, and what stopping it costs."""

    job_id: str
    tenant: str
    tier: Tier
    gpus: float
    gpu_seconds_lost: float
    borrowed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """The job's place in the pass's order (tier, urgency, then fair share)."""

    position: int  # 1-based
    queue_length: int
    ahead_same_tier: int  # jobs of its tier ahead of it
    tenant_share: float  # its tenant's dominant share of the fleet now


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    job_id: str
    standing: Standing
    quota: QuotaDecision | None  # None: quotas are off
    outcome: str  # "place", "defer" or "wait": what a pass now would do
    reason: Reason | None  # why it waits (a wait only)
    message: str
    site: str | None  # where it would go (place) or go later (defer)
    pool_id: str | None
    deferred_until: datetime | None
    deferral: str  # why it would (or would not) be deferred
    borrowed: bool  # it would run beyond its quota's nominal (reclaimable)
    victims: tuple[Victim, ...]  # what a placement would preempt first
    preemption: str  # the preemption outcome in a sentence


def explain_job(
    engine: Engine,
    job: Job,
    *,
    queue: Sequence[Job],
    pools: Sequence[GpuPool],
    running: Sequence[RunningWork],
    sites: Sequence[Site],
    latency: LatencyMatrix,
    carbon: CarbonOracle,
    now: datetime,
) -> Explanation:
    """What a pass now would decide for `job` (pending or deferred), and why."""
    s = engine.settings
    me = replace(job, state=JobState.PENDING)  # a deferred job is judged as if released
    jobs = [j for j in queue if j.id != job.id] + [me]
    shares = dominant_shares(usage=usage_from_running(running), capacity=capacity_from_pools(pools))
    ordered = order_queue(
        jobs=jobs,
        shares=shares,
        now=now,
        aging_per_hour=s.aging_per_hour,
        urgent_slack_s=s.urgent_slack_s,
    )
    position = next(i for i, j in enumerate(ordered) if j.id == job.id)
    decided = {j.id for j in ordered[: position + 1]}
    decisions = engine.plan(
        queue=jobs,
        pools=pools,
        running=running,
        sites=sites,
        latency=latency,
        carbon=carbon,
        now=now,
        skip=lambda j: j.id not in decided,
        waiting=[j.spec for j in jobs],
    )
    mine = next(d for d in decisions if d.job.id == job.id)
    standing = Standing(
        position=position + 1,
        queue_length=len(ordered),
        ahead_same_tier=sum(1 for j in ordered[:position] if j.spec.tier is job.spec.tier),
        tenant_share=round(shares.get(job.tenant, 0.0), 4),
    )
    if isinstance(mine, Wait):
        return Explanation(
            outcome="wait",
            reason=mine.code,
            message=mine.reason,
            site=None,
            pool_id=None,
            deferred_until=None,
            deferral=_no_deferral(engine, job, placed=False),
            borrowed=False,
            victims=(),
            preemption=_no_preemption(engine, job, mine),
            job_id=job.id,
            standing=standing,
            quota=mine.quota,
        )
    if isinstance(mine, Defer):
        return Explanation(
            outcome="defer",
            reason=None,
            message=mine.reason,
            site=mine.site,
            pool_id=None,
            deferred_until=mine.until,
            deferral=mine.reason,
            borrowed=False,
            victims=(),
            preemption="none needed: it fits now",
            job_id=job.id,
            standing=standing,
            quota=mine.quota,
        )
    return _placed(engine, job, mine, running=running, now=now, standing=standing)


def _placed(
    engine: Engine,
    job: Job,
    mine: Place,
    *,
    running: Sequence[RunningWork],
    now: datetime,
    standing: Standing,
) -> Explanation:
    by_id = {w.job_id: w for w in running}
    victims: tuple[Victim, ...] = ()
    preemption = "none needed: it fits now"
    if mine.victims is not None and mine.victims.job_ids:
        victims = tuple(
            Victim(
                job_id=w.job_id,
                tenant=w.tenant,
                tier=w.tier,
                gpus=w.gpu_milli / MILLI_PER_GPU,
                gpu_seconds_lost=round(w.gpu_seconds_run(now), 1),
                borrowed=w.borrowed,
            )
            for v in mine.victims.job_ids
            if (w := by_id.get(v)) is not None
        )
        preemption = mine.victims.reason
    c = mine.candidate
    return Explanation(
        outcome="place",
        reason=None,
        message=f"site {c.site}, pool {c.pool_id}",
        site=c.site,
        pool_id=c.pool_id,
        deferred_until=None,
        deferral=_no_deferral(engine, job, placed=mine.victims is None),
        borrowed=mine.borrowed,
        victims=victims,
        preemption=preemption,
        job_id=job.id,
        standing=standing,
        quota=mine.quota,
    )


def _no_deferral(engine: Engine, job: Job, *, placed: bool) -> str:
    """Why the job is not deferred."""
    spec = job.spec
    if not engine.settings.deferral:
        return "deferral is off"
    if spec.tier is Tier.P1:
        return "P1 is never deferred"
    if spec.deadline is None:
        return "no deadline: only a job with a deadline is deferred"
    if not placed:
        return "only a job that could start now is deferred"
    return (
        f"no later window before its deadline saves at least "
        f"{engine.settings.deferral_min_saving:.0%} gCO2e"
    )


def _no_preemption(engine: Engine, job: Job, wait: Wait) -> str:
    """Why waiting did not lead to preempting anything."""
    if wait.code is not Reason.NO_CAPACITY:
        return "not tried: the job may not start whatever the room"
    if not engine.settings.preemption:
        return "preemption is off"
    if job.spec.tier is not Tier.P1 and not engine.settings.quotas:
        return "only P1 (or a quota owner taking back borrowed GPUs) preempts"
    return "no set of eligible preemptible work frees a slot for it"
