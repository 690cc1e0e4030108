"""Service routes: create, list, show, update, delete, and signals that raise the floor.

Same rules as jobs: the tenant comes from the token (operators see every tenant's), an
`Idempotency-Key` makes a create safe to retry, bad input is a problem document. A create
is refused when no site could ever run one replica (as a job submission is). PATCH is a
JSON merge patch (RFC 7386) of the service's body, validated whole again; a change of what
replicas run (image, command, env, port, resources) starts a new generation, which the
controller rolls out without dropping below the ready capacity.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

from aiohttp import web

from broker.api.admission import (
    check_models,
    check_satisfiable,
    idempotency_key,
    key_reused,
    known_models,
    valid_id,
)
from broker.api.context import principal
from broker.api.keys import CLOCK, LOOP, SERVING, STORE
from broker.api.problems import (
    MERGE_PATCH,
    ApiProblem,
    not_found,
    read_json,
    read_model,
    validate_into,
    validation_problem,
)
from broker.api.schemas import ProblemField
from broker.api.service_schemas import (
    DecisionOut,
    LoadOut,
    ReplicaOut,
    ServiceIn,
    ServiceOut,
    ServicePageOut,
    SignalIn,
    SignalOut,
)
from broker.db.service_store import Decision, Signal
from broker.domain.enums import JobState
from broker.domain.errors import IdempotencyConflict, ServiceDeleted, ServiceNotFound
from broker.domain.jobs import Job, Placement
from broker.domain.jobs import draft as draft_job
from broker.domain.serde import service_spec_from_dict, service_spec_to_dict
from broker.domain.services import Service, ServiceSpec, ServiceState, replica_spec

routes = web.RouteTableDef()


def _spec(body: ServiceIn) -> ServiceSpec:
    return service_spec_from_dict(body.model_dump(mode="json"))


async def _check(request: web.Request, spec: ServiceSpec, tenant: str) -> None:
    """Refuse what can never run: unknown GPU models, or no site for one replica."""
    check_models(spec.resources.gpu_models, await known_models(request))
    now = request.app[CLOCK].now()
    service = Service(
        id="svc-draft",
        tenant=tenant,
        spec=spec,
        state=ServiceState.ACTIVE,
        generation=1,
        created_at=now,
        updated_at=now,
    )
    job = draft_job(replica_spec(service), tenant=tenant, at=now)
    check_satisfiable(
        await request.app[LOOP].evaluate(job, ignore_capacity=True), what="service's replica"
    )


def _wake(request: web.Request) -> None:
    if SERVING in request.app:
        request.app[SERVING].wake()


async def _get(request: web.Request) -> Service:
    who = principal(request)
    service_id = valid_id(request, "service_id")
    try:
        return await request.app[STORE].get_service(
            service_id, tenant=None if who.sees_all_tenants() else who.tenant
        )
    except ServiceNotFound:
        raise not_found(f"no service {service_id}") from None


def _replica(job: Job, placement: Placement | None) -> ReplicaOut:
    return ReplicaOut(
        job_id=job.id,
        state=job.state.value,
        generation=job.spec.generation,
        ready=job.state is JobState.RUNNING,
        site=None if placement is None else placement.site,
        pool_id=None if placement is None else placement.pool_id,
        started_at=None if placement is None else placement.started_at,
    )


def _decision(d: Decision) -> DecisionOut:
    return DecisionOut(
        at=d.at, desired=d.desired, ready=d.ready, load=d.load, mode=d.mode, reason=d.reason
    )


def _signal(s: Signal) -> SignalOut:
    return SignalOut(id=s.id, start=s.start, until=s.until, replicas=s.replicas, note=s.note)


async def service_out(request: web.Request, svc: Service, *, detail: bool) -> ServiceOut:
    store = request.app[STORE]
    replicas = await store.replicas(svc.id)
    ready = sum(1 for job, _ in replicas if job.state is JobState.RUNNING)
    extra: dict[str, Any] = {}
    if detail:
        now = request.app[CLOCK].now()
        load = await store.latest_load(svc.id)
        extra = {
            "replicas": [_replica(j, p) for j, p in replicas],
            "decisions": [_decision(d) for d in await store.decisions(svc.id)],
            "signals": [_signal(s) for s in await store.signals(svc.id, now=now)],
            "load": None
            if load is None
            else LoadOut(at=load[0], value=load[1], metric=svc.spec.metric.value),
        }
    return ServiceOut(
        id=svc.id,
        tenant=svc.tenant,
        state=svc.state.value,
        generation=svc.generation,
        spec=ServiceIn.model_validate_json(json.dumps(service_spec_to_dict(svc.spec))),
        desired_replicas=svc.desired,
        ready_replicas=ready,
        created_at=svc.created_at,
        updated_at=svc.updated_at,
        **extra,
    )


def _json(out: ServiceOut | ServicePageOut | SignalOut, status: int = 200) -> web.Response:
    return web.json_response(text=out.model_dump_json(), status=status)


@routes.post("/v1/services")
async def create_service(request: web.Request) -> web.Response:
    who = principal(request)
    key = idempotency_key(request)
    body = await read_model(request, ServiceIn)
    spec = _spec(body)
    await _check(request, spec, who.tenant)
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    try:
        svc, created = await request.app[STORE].create_service(
            tenant=who.tenant, spec=spec, idempotency_key=key, request_hash=digest
        )
    except IdempotencyConflict as exc:
        raise key_reused(what="service", earlier=exc.job_id) from None
    if created:
        _wake(request)
    headers = {"Location": f"/v1/services/{svc.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    out = await service_out(request, svc, detail=False)
    return web.json_response(text=out.model_dump_json(), status=201, headers=headers)


@routes.get("/v1/services")
async def list_services(request: web.Request) -> web.Response:
    who = principal(request)
    services = await request.app[STORE].list_services(
        tenant=None if who.sees_all_tenants() else who.tenant
    )
    items = [await service_out(request, s, detail=False) for s in services]
    return _json(ServicePageOut(items=items))


@routes.get("/v1/services/{service_id}")
async def show_service(request: web.Request) -> web.Response:
    return _json(await service_out(request, await _get(request), detail=True))


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, null removes, others replace."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


@routes.patch("/v1/services/{service_id}")
async def update_service(request: web.Request) -> web.Response:
    svc = await _get(request)
    patch = await read_json(request, media=("application/json", MERGE_PATCH))
    if not isinstance(patch, dict):
        raise validation_problem(
            [ProblemField(field="(body)", type="object", message="a JSON merge patch object")]
        )
    body = validate_into(ServiceIn, _merge(service_spec_to_dict(svc.spec), patch))
    spec = _spec(body)
    await _check(request, spec, svc.tenant)
    try:
        updated = await request.app[STORE].update_service(svc.id, tenant=svc.tenant, spec=spec)
    except ServiceDeleted:
        raise _deleting(svc.id) from None
    _wake(request)
    return _json(await service_out(request, updated, detail=True))


def _deleting(service_id: str) -> ApiProblem:
    return ApiProblem(
        status=409,
        slug="service-deleting",
        title="The service is being deleted",
        detail=f"service {service_id} is draining; it cannot change any more",
    )


@routes.delete("/v1/services/{service_id}")
async def delete_service(request: web.Request) -> web.Response:
    svc = await _get(request)
    deleting = await request.app[STORE].delete_service(svc.id, tenant=svc.tenant)
    _wake(request)
    return _json(await service_out(request, deleting, detail=True), status=202)


@routes.post("/v1/services/{service_id}/signals")
async def add_signal(request: web.Request) -> web.Response:
    svc = await _get(request)
    body = await read_model(request, SignalIn)
    now = request.app[CLOCK].now()
    start: datetime = body.start or now
    if body.until <= start:
        raise validation_problem(
            [ProblemField(field="until", type="range", message="until must be after start")]
        )
    if body.replicas is not None:
        replicas = body.replicas
    else:
        assert body.factor is not None
        replicas = math.ceil(body.factor * max(svc.desired, svc.spec.min_replicas, 1))
    replicas = min(replicas, svc.spec.max_replicas)
    if svc.state.value != "active":
        raise _deleting(svc.id)
    signal = await request.app[STORE].add_signal(
        svc.id, start=start, until=body.until, replicas=replicas, note=body.note
    )
    _wake(request)
    return _json(_signal(signal), status=201)
