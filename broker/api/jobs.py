"""Job routes: submit, list, show, cancel, and the placement dry run."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TypeVar

from aiohttp import web

from broker.api.admission import (
    check_satisfiable,
    idempotency_key,
    key_reused,
    known_models,
    model_errors,
    valid_id,
)
from broker.api.context import principal
from broker.api.convert import (
    explain_out,
    job_explain_out,
    job_out,
    preemptors,
    spec_from_api,
)
from broker.api.job_conditions import burst_waits
from broker.api.keys import BURSTER, CLOCK, LOOP, SETTINGS, STORE
from broker.api.problems import ApiProblem, not_found, read_model, validation_problem
from broker.api.query import given, integer, reject_unknown
from broker.api.schemas import CandidateOut, ExplainOut, JobIn, JobOut, JobPageOut, ProblemField
from broker.db.repository import InvalidCursor, JobDetail
from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.errors import IdempotencyConflict, JobAlreadyFinished, JobNotFound
from broker.domain.jobs import Job, JobSpec, draft
from broker.domain.tenancy import Principal
from carbon.live.errors import SourceError
from carbon.static import SOURCE_NAME as STATIC_SOURCE

routes = web.RouteTableDef()

LIST_PARAMS = frozenset({"state", "priority", "kind", "limit", "cursor"})


def _check_submission(request: web.Request, spec: JobSpec, known_models: set[str]) -> None:
    """Refuse what can never run: unknown models (also as the reference of the estimate),
    deadlines that cannot be met."""
    errors: list[ProblemField] = model_errors(spec.resources.gpu_models, known_models)
    reference = spec.reference_gpu_model
    if reference is not None and reference not in known_models:
        errors.append(
            ProblemField(
                field="reference_gpu_model",
                type="unknown_gpu_model",
                message=f"unknown GPU model {reference!r}; known: "
                + ", ".join(sorted(known_models)),
            )
        )
    if spec.deadline is not None:
        now = request.app[CLOCK].now()
        if spec.deadline <= now:
            errors.append(
                ProblemField(
                    field="deadline", type="deadline_past", message="the deadline is in the past"
                )
            )
        elif spec.deadline < now + timedelta(seconds=spec.estimated_duration_s):
            errors.append(
                ProblemField(
                    field="deadline",
                    type="deadline_unreachable",
                    message="the deadline is sooner than now + estimated_duration_s",
                )
            )
    if errors:
        raise validation_problem(errors)


def _draft(spec: JobSpec, tenant: str, request: web.Request) -> Job:
    return draft(spec, tenant=tenant, at=request.app[CLOCK].now())


@routes.post("/v1/jobs")
async def submit_job(request: web.Request) -> web.Response:
    who = principal(request)
    key = idempotency_key(request)
    body = await read_model(request, JobIn)
    spec = spec_from_api(body)
    _check_submission(request, spec, await known_models(request))
    loop = request.app[LOOP]
    draft = _draft(spec, who.tenant, request)
    ev = await loop.evaluate(draft, ignore_capacity=True)
    if not ev.candidates and BURSTER in request.app:
        if not await request.app[BURSTER].could_serve(draft):
            check_satisfiable(ev)  # no private site nor any burst target: refused
    else:
        check_satisfiable(ev)
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    try:
        job, created = await request.app[STORE].create_job(
            tenant=who.tenant, spec=spec, idempotency_key=key, request_hash=digest
        )
    except IdempotencyConflict as exc:
        raise key_reused(what="job", earlier=exc.job_id) from None
    if created:
        loop.wake()
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(text=job_out(job).model_dump_json(), status=201, headers=headers)


E = TypeVar("E", JobState, Tier, JobKind)


def _enum_list(request: web.Request, name: str, enum: type[E]) -> list[E]:
    values = [v for raw in request.query.getall(name, []) for v in raw.split(",") if v]
    try:
        return [enum(v) for v in values]
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise validation_problem(
            [ProblemField(field=name, type="enum", message=f"must be among: {allowed}")]
        ) from None


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    who = principal(request)
    reject_unknown(request, LIST_PARAMS)
    limit = integer(request, "limit", default=50, lo=1, hi=500)
    try:
        page = await request.app[STORE].list_jobs(
            tenant=None if who.sees_all_tenants() else who.tenant,
            states=_enum_list(request, "state", JobState),
            tiers=_enum_list(request, "priority", Tier),
            kinds=_enum_list(request, "kind", JobKind),
            limit=limit,
            cursor=given(request, "cursor"),
        )
    except InvalidCursor:
        raise validation_problem(
            [
                ProblemField(
                    field="cursor", type="invalid_cursor", message="not a cursor this API returned"
                )
            ]
        ) from None
    bursts = await burst_waits(request, page.jobs)
    out = JobPageOut(
        items=[job_out(j, condition=bursts.get(j.id)) for j in page.jobs],
        next_cursor=page.next_cursor,
    )
    return web.json_response(text=out.model_dump_json())


def _job_id(request: web.Request) -> str:
    return valid_id(request, "job_id")


async def _shown(request: web.Request, who: Principal, detail: JobDetail) -> JobOut:
    """The job as `who` may see it: a user's events name no other tenant's job."""
    burst = (await burst_waits(request, [detail.job])).get(detail.job.id)
    if who.sees_all_tenants():
        return job_out(detail.job, detail, condition=burst)
    mine: set[str] = set()
    for other in preemptors(detail.events):
        try:
            await request.app[STORE].get_job(other, tenant=who.tenant)
        except JobNotFound:
            continue
        mine.add(other)
    return job_out(detail.job, detail, mine=mine, condition=burst)


async def _visible(request: web.Request, who: Principal, job_id: str) -> JobDetail:
    """The job as `who` may see it: another tenant's job is not found, unless `who` sees
    every tenant."""
    try:
        return await request.app[STORE].get_job(
            job_id, tenant=None if who.sees_all_tenants() else who.tenant
        )
    except JobNotFound:
        raise not_found(f"no job {job_id}") from None


@routes.get("/v1/jobs/{job_id}")
async def show_job(request: web.Request) -> web.Response:
    who = principal(request)
    detail = await _visible(request, who, _job_id(request))
    return web.json_response(text=(await _shown(request, who, detail)).model_dump_json())


@routes.get("/v1/jobs/{job_id}/explain")
async def explain_job(request: web.Request) -> web.Response:
    """A waiting job evaluated as the scheduler would now: quota, fair-share standing,
    deferral, preemption candidates (`broker.domain.explain`)."""
    who = principal(request)
    job_id = _job_id(request)
    detail = await _visible(request, who, job_id)
    job = detail.job
    if job.state not in (JobState.PENDING, JobState.DEFERRED):
        raise ApiProblem(
            status=409,
            slug="job-not-waiting",
            title="The job is not waiting",
            detail=f"job {job_id} is {job.state.value}; explain evaluates pending and "
            "deferred jobs (GET /v1/jobs/{id} shows where it runs)",
        )
    ex = await request.app[LOOP].explain(job)
    out = job_explain_out(job, ex, at=request.app[CLOCK].now(), sees_all=who.sees_all_tenants())
    return web.json_response(text=out.model_dump_json())


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    who = principal(request)
    job_id = _job_id(request)
    try:
        job = await request.app[LOOP].cancel(
            job_id, tenant=None if who.sees_all_tenants() else who.tenant
        )
    except JobNotFound:
        raise not_found(f"no job {job_id}") from None
    except JobAlreadyFinished as exc:
        raise ApiProblem(
            status=409,
            slug="job-already-finished",
            title="The job already finished",
            detail=f"job {job_id} is {exc.state}; there is nothing to cancel",
        ) from None
    detail = await request.app[STORE].get_job(job.id)
    return web.json_response(text=(await _shown(request, who, detail)).model_dump_json())


@routes.post("/v1/placements:explain")
async def explain(request: web.Request) -> web.Response:
    who = principal(request)
    body = await read_model(request, JobIn)
    spec = spec_from_api(body)
    _check_submission(request, spec, await known_models(request))
    ev = await request.app[LOOP].evaluate(_draft(spec, who.tenant, request), ignore_capacity=False)
    # how full each pool is stays with operators, as in /v1/inventory
    out = await _with_carbon_basis(request, explain_out(ev, occupancy=who.sees_all_tenants()))
    return web.json_response(text=out.model_dump_json())


async def _with_carbon_basis(request: web.Request, out: ExplainOut) -> ExplainOut:
    """State the carbon basis, and per candidate which source gives its zone's intensity:
    the static table is a flat annual mean, every other source is hourly."""
    zones = {s.name: s.grid_zone for s in await request.app[STORE].sites()}
    carbon, now = request.app[LOOP].carbon, request.app[CLOCK].now()
    answered: dict[str, str | None] = {}
    for zone in {zones[c.site] for c in out.candidates if c.site in zones}:
        try:
            reading = await carbon.current(zone, at=now)
        except SourceError:
            reading = None
        answered[zone] = None if reading is None else reading.source

    def mark(c: CandidateOut) -> CandidateOut:
        source = answered.get(zones.get(c.site, ""))
        hourly = None if source is None else source != STATIC_SOURCE
        return c.model_copy(update={"intensity_source": source, "hourly": hourly})

    candidates = [mark(c) for c in out.candidates]
    return out.model_copy(
        update={
            "basis": request.app[SETTINGS].carbon.basis,
            "candidates": candidates,
            "winner": candidates[0] if candidates else None,
        }
    )
