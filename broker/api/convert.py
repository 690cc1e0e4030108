"""Between API bodies and domain values, and what a plain user may see of them.

A user sees only their own tenant's jobs, but two things the broker records are about other
tenants: a preemption's event names the job that preempted this one and every other victim
(with tier and tenant), and the placement dry run's capacity rejections and packing term
tell how full each pool is, which `/v1/inventory` keeps to operators. For users these are
rewritten here, at the boundary; the store keeps the full record for operators.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from datetime import datetime

from broker.api.explain_schemas import JobExplainOut, QuotaOut, StandingOut, VictimOut
from broker.api.schemas import (
    CandidateOut,
    ConditionOut,
    EventOut,
    ExplainOut,
    JobIn,
    JobOut,
    ObjectiveIn,
    PlacementOut,
    RejectionOut,
    ResourcesIn,
    WeightsOut,
    WorkloadIn,
)
from broker.db.repository import JobDetail
from broker.domain.conditions import Condition
from broker.domain.enums import Tier
from broker.domain.explain import Explanation
from broker.domain.fleet import MILLI_PER_GPU
from broker.domain.jobs import Job, JobEvent, JobSpec
from broker.domain.placement import Candidate, Evaluation
from broker.domain.rules import RejectReason
from broker.domain.serde import spec_from_dict


def spec_from_api(body: JobIn) -> JobSpec:
    return spec_from_dict(body.model_dump(mode="json"))


def spec_to_api(spec: JobSpec) -> JobIn:
    r, w = spec.resources, spec.workload
    return JobIn.model_construct(
        name=spec.name,
        priority=spec.tier.value,
        kind=spec.kind.value,
        resources=ResourcesIn.model_construct(
            gpus=r.gpus,
            gpu_models=list(r.gpu_models),
            min_gpu_memory_gb=r.min_gpu_memory_gb,
            mig_profile=r.mig_profile,
            gpu_fraction=r.gpu_fraction,
            nodes=r.nodes,
            cpu=r.cpu,
            memory_gb=r.memory_gb,
        ),
        workload=WorkloadIn.model_construct(
            image=w.image, command=list(w.command), env=dict(w.env)
        ),
        estimated_duration_s=spec.estimated_duration_s,
        deadline=spec.deadline,
        latency_slo_ms=spec.latency_slo_ms,
        origin=spec.origin,
        allowed_regions=list(spec.allowed_regions),
        preemptible=spec.preemptible,
        max_hourly_cost=spec.max_hourly_cost,
        objective=None
        if spec.objective is None
        else ObjectiveIn.model_construct(
            cost=spec.objective.cost, latency=spec.objective.latency, carbon=spec.objective.carbon
        ),
        reference_gpu_model=spec.reference_gpu_model,
        node_pool=spec.node_pool,
    )


# How `broker.scheduling.apply` words a preemption on its victim: "for <tier> job <id>:
# <each victim with its tier and tenant, and why>". `tests/api/test_tenancy.py` preempts a
# job for real, so a change of wording that would slip past this fails there.
_PREEMPTED_FOR = re.compile(r"^for (P[1-3]) job (\S+): ")


def preemptors(events: Iterable[JobEvent]) -> set[str]:
    """The ids of the jobs that preempted this one, as its events name them."""
    return {m[2] for e in events if (m := _PREEMPTED_FOR.match(e.detail))}


def _detail_for_user(event: JobEvent, *, tier: Tier, mine: Set[str]) -> str:
    """An event's detail without other tenants' jobs: a preemption names its preemptor only
    when it is the user's own job, and otherwise says why it could take the GPUs."""
    m = _PREEMPTED_FOR.match(event.detail)
    if m is None:
        return event.detail
    by_tier, by_job = Tier(m[1]), m[2]
    if by_job in mine:
        return f"preempted for your {by_tier.value} job {by_job}"
    if by_tier.rank < tier.rank:
        return "preempted for a job of a higher tier"
    # the only other ground (broker.domain.policy.preemption, rule 1): this job ran on quota
    # borrowed from another tenant, who took it back
    return "preempted: the tenant whose idle quota this job borrowed needed it back"


def job_out(
    job: Job,
    detail: JobDetail | None = None,
    *,
    mine: Set[str] | None = None,
    condition: Condition | None = None,
) -> JobOut:
    """The job as the API shows it. `mine`: for a plain user, which of the job's
    `preemptors` are the user's own (the others go unnamed); None shows every event as
    stored (operators). `condition`: shown instead of the stored one (a burst wait)."""
    placement = events = None
    if detail is not None:
        p = detail.placement
        if p is not None:
            placement = PlacementOut(
                site=p.site,
                pool_id=p.pool_id,
                gpus=p.gpu_milli / MILLI_PER_GPU,
                price_per_gpu_hour=p.price_per_gpu_hour,
                spot=p.spot,
                estimated_cost_usd=round(p.estimated_cost_usd, 4),
                estimated_gco2=None if p.estimated_gco2 is None else round(p.estimated_gco2, 2),
                created_at=p.created_at,
                started_at=p.started_at,
                ended_at=p.ended_at,
            )
        events = [
            EventOut(
                at=e.at,
                from_state=e.from_state.value if e.from_state else None,
                to_state=e.to_state.value,
                reason=e.reason,
                detail=e.detail
                if mine is None
                else _detail_for_user(e, tier=job.spec.tier, mine=mine),
            )
            for e in detail.events
        ]
    return JobOut(
        id=job.id,
        tenant=job.tenant,
        name=job.spec.name,
        priority=job.spec.tier.value,
        kind=job.spec.kind.value,
        state=job.state.value,
        state_reason=job.state_reason,
        preemptible=job.spec.is_preemptible,
        created_at=job.created_at,
        updated_at=job.updated_at,
        spec=spec_to_api(job.spec),
        placement=placement,
        events=events,
        condition=condition_out(condition or job.condition),
    )


def condition_out(c: Condition | None) -> ConditionOut | None:
    if c is None:
        return None
    return ConditionOut(type=c.type.value, reason=c.reason.value, message=c.message, since=c.since)


def job_explain_out(job: Job, ex: Explanation, *, at: datetime, sees_all: bool) -> JobExplainOut:
    """The explain answer; for a plain user, preemption candidates of other tenants go
    unnamed (tier and size only), as a preemption's events do."""
    q = ex.quota
    return JobExplainOut(
        job_id=job.id,
        state=job.state.value,
        evaluated_at=at,
        outcome=ex.outcome,
        reason=None if ex.reason is None else ex.reason.value,
        message=ex.message,
        site=ex.site,
        pool_id=ex.pool_id,
        deferred_until=ex.deferred_until,
        deferral=ex.deferral,
        borrowed=ex.borrowed,
        quota=None
        if q is None
        else QuotaOut(
            allowed=q.allowed,
            borrowed=q.borrowed,
            reason=q.reason,
            code=None if q.code is None else q.code.value,
            nominal=q.nominal,
            cap=q.cap,
            used=round(q.used, 3),
            # how full the fleet is stays with operators, as in /v1/inventory
            free=round(q.idle, 3) if sees_all else None,
            reserved=round(q.reserved, 3) if sees_all else None,
            unreserved=round(q.unreserved, 3) if sees_all else None,
        ),
        standing=StandingOut(
            position=ex.standing.position,
            queue_length=ex.standing.queue_length,
            ahead_same_tier=ex.standing.ahead_same_tier,
            tenant_share=ex.standing.tenant_share,
        ),
        preemption=ex.preemption,
        victims=[
            VictimOut(
                job_id=v.job_id if sees_all or v.tenant == job.tenant else None,
                tenant=v.tenant if sees_all or v.tenant == job.tenant else None,
                tier=v.tier.value,
                gpus=v.gpus,
                gpu_seconds_lost=v.gpu_seconds_lost,
                borrowed=v.borrowed,
            )
            for v in ex.victims
        ],
    )


def _candidate(rank: int, c: Candidate, *, occupancy: bool) -> CandidateOut:
    return CandidateOut(
        rank=rank,
        site=c.site,
        pool_id=c.pool_id,
        gpu_model=c.gpu_model,
        gpus=c.gpu_milli / MILLI_PER_GPU,
        hourly_cost_usd=round(c.hourly_cost_usd, 4),
        cost_usd=round(c.cost_usd, 4),
        latency_ms=c.latency_ms,
        carbon_intensity_gco2_per_kwh=c.intensity_gco2_per_kwh,
        energy_kwh=round(c.energy_kwh, 4),
        gco2=None if c.gco2 is None else round(c.gco2, 2),
        duration_s=round(c.duration_s, 1),
        cost_term=round(c.cost_term, 4),
        latency_term=round(c.latency_term, 4),
        carbon_term=round(c.carbon_term, 4),
        packing_term=round(c.packing_term, 4) if occupancy else None,
        score=round(c.score, 4),
    )


_NO_ROOM = "not enough free GPUs, CPUs or memory on this pool's nodes now"


def explain_out(ev: Evaluation, *, occupancy: bool) -> ExplainOut:
    """The dry run's answer; without `occupancy` (users) no figure says how full a pool is:
    capacity rejections say only that there is no room, and the packing term is null."""
    cands = [_candidate(i + 1, c, occupancy=occupancy) for i, c in enumerate(ev.candidates)]
    return ExplainOut(
        winner=cands[0] if cands else None,
        candidates=cands,
        rejected=[
            RejectionOut(
                site=r.site,
                pool_id=r.pool_id,
                reason=r.reason.value,
                detail=r.detail if occupancy or r.reason is not RejectReason.CAPACITY else _NO_ROOM,
            )
            for r in ev.rejections
        ],
        weights=WeightsOut(
            cost=round(ev.weights.cost, 4),
            latency=round(ev.weights.latency, 4),
            carbon=round(ev.weights.carbon, 4),
        ),
        note=(
            "score = weights · terms; each term is min-max normalised over the feasible "
            "pools (0 best, 1 worst; unknown counts as worst). Lowest score wins; ties go "
            "to the pool the job fills best."
        ),
    )
