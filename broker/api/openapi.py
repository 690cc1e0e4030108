"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests.

`tests/api/test_openapi.py` checks that every route the app serves is described here and
nothing else is, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from broker import __version__
from broker.api.explain_schemas import JobExplainOut
from broker.api.problems import PROBLEM_JSON
from broker.api.schemas import (
    ExplainOut,
    HealthOut,
    InventoryOut,
    JobIn,
    JobOut,
    JobPageOut,
    Problem,
    ProviderListOut,
    ScheduleOut,
    SiteListOut,
    TokenListOut,
)
from broker.api.service_schemas import ServiceIn, ServiceOut, ServicePageOut, SignalIn, SignalOut

_ERRORS = {
    400: "Malformed JSON",
    401: "Missing or invalid token",
    403: "Role too low",
    404: "Not found (another tenant's job is not found either)",
    409: "Conflict",
    413: "Body over the size limit",
    415: "Not application/json",
    422: "Validation failed; `errors` names each bad field",
    503: "Overloaded: no database connection came free in time; retry after Retry-After",
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    ok: int
    response: type[BaseModel] | None
    request: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    params: tuple[dict[str, Any], ...] = field(default=())
    media: str = "application/json"
    also: tuple[str, ...] = ()  # other media types of the success response, as text
    auth_setting: str | None = None  # the setting that decides whether a token is needed
    patch: bool = False  # the body is a JSON merge patch of the resource's request body


def _q(name: str, desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter; given empty (`?name=`), it counts as absent."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": desc + "; empty: as if absent",
        "schema": schema,
    }


# A time parameter: RFC 3339 with an offset (within `broker.domain.bounds`), or empty.
_TIME = {"type": "string", "anyOf": [{"format": "date-time"}, {"maxLength": 0}]}


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SERVICE_ID = {
    "name": "service_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key + same body from the same tenant returns the same resource; "
    "a different body is a 409.",
    "schema": {"type": "string", "maxLength": 255},
}

OPERATIONS: tuple[Op, ...] = (
    Op(
        "post",
        "/v1/jobs",
        "Submit a job",
        201,
        JobOut,
        JobIn,
        (400, 401, 409, 413, 415, 422),
        params=(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Same key + same body from the same tenant returns the same job; "
                "a different body is a 409.",
                "schema": {"type": "string", "maxLength": 255},
            },
        ),
    ),
    Op(
        "get",
        "/v1/jobs",
        "List jobs, newest first",
        200,
        JobPageOut,
        None,
        (401, 422),
        params=(
            _q("state", "Comma-separated states", {"type": "string"}),
            _q("priority", "Comma-separated tiers P1,P2,P3", {"type": "string"}),
            _q("kind", "Comma-separated kinds", {"type": "string"}),
            _q(
                "limit",
                "Page size",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            ),
            _q("cursor", "next_cursor of the previous page", {"type": "string", "maxLength": 64}),
        ),
    ),
    Op(
        "get",
        "/v1/jobs/{job_id}",
        "A job with its placement and events",
        200,
        JobOut,
        None,
        (401, 404),
        params=(_JOB_ID,),
    ),
    Op(
        "get",
        "/v1/jobs/{job_id}/explain",
        "A pending or deferred job evaluated as the scheduler would now: what a pass would "
        "do and why (quota check with figures, fair-share standing, deferral, preemption "
        "candidates with their cost). Users see neither how full the fleet is nor other "
        "tenants' jobs by name; 409 when the job is not waiting",
        200,
        JobExplainOut,
        None,
        (401, 404, 409),
        params=(_JOB_ID,),
    ),
    Op(
        "delete",
        "/v1/jobs/{job_id}",
        "Cancel a job (idempotent)",
        200,
        JobOut,
        None,
        (401, 404, 409),
        params=(_JOB_ID,),
    ),
    Op(
        "post",
        "/v1/placements:explain",
        "Dry-run placement: ranked sites and rejections. Users see feasibility and ranking "
        "without how full pools are: a capacity rejection says only that there is no room, "
        "and packing_term is null (operators see both)",
        200,
        ExplainOut,
        JobIn,
        (400, 401, 413, 415, 422),
    ),
    Op(
        "post",
        "/v1/services",
        "Create an inference service: its replicas are placed like jobs and scaled on load",
        201,
        ServiceOut,
        ServiceIn,
        (400, 401, 409, 413, 415, 422),
        params=(_IDEMPOTENCY,),
    ),
    Op("get", "/v1/services", "List services", 200, ServicePageOut, None, (401,)),
    Op(
        "get",
        "/v1/services/{service_id}",
        "A service: desired and ready replicas, each replica, load, the autoscaler's "
        "decisions with reasons, signals",
        200,
        ServiceOut,
        None,
        (401, 404),
        params=(_SERVICE_ID,),
    ),
    Op(
        "patch",
        "/v1/services/{service_id}",
        "Change a service (a JSON merge patch of its body); a new image, command, env, port "
        "or resources rolls the replicas over without dropping below the ready capacity",
        200,
        ServiceOut,
        None,
        (400, 401, 404, 409, 413, 415, 422),
        params=(_SERVICE_ID,),
        patch=True,
    ),
    Op(
        "delete",
        "/v1/services/{service_id}",
        "Delete a service: its replicas are stopped, then it is gone",
        202,
        ServiceOut,
        None,
        (401, 404),
        params=(_SERVICE_ID,),
    ),
    Op(
        "post",
        "/v1/services/{service_id}/signals",
        "Raise the service's floor for a period (a campaign, a launch)",
        201,
        SignalOut,
        SignalIn,
        (400, 401, 404, 409, 413, 415, 422),
        params=(_SERVICE_ID,),
    ),
    Op("get", "/v1/sites", "Configured sites and their health", 200, SiteListOut, None, (401,)),
    Op(
        "get",
        "/v1/inventory",
        "GPU inventory per site and pool (operator)",
        200,
        InventoryOut,
        None,
        (401, 403),
    ),
    Op(
        "get",
        "/v1/admin/tokens",
        "Configured tokens: name, tenant, role (admin)",
        200,
        TokenListOut,
        None,
        (401, 403),
    ),
    Op(
        "get",
        "/v1/admin/providers",
        "Check each site's credentials and permissions now (admin)",
        200,
        ProviderListOut,
        None,
        (401, 403),
    ),
    Op(
        "get",
        "/v1/admin/schedule",
        "Scheduled duties: the leading replica and each duty's last run (admin)",
        200,
        ScheduleOut,
        None,
        (401, 403),
    ),
    Op(
        "get",
        "/v1/reports/sustainability",
        "Energy, emissions, avoided emissions and cost of the runs that ended in a period "
        "(your tenant's; every tenant's for operators); also text/csv and text/html",
        200,
        None,
        None,
        (401, 422),
        params=(
            _q("from", "start, RFC 3339 (default: `to` minus 30 days)", _TIME),
            _q("to", "end, exclusive, RFC 3339 (default: now)", _TIME),
            _q(
                "group_by",
                "grouping",
                {"type": "string", "enum": ["tenant", "site", "tier", "day", "service"]},
            ),
            _q("format", "output", {"type": "string", "enum": ["json", "csv", "html"]}),
        ),
        also=("text/csv", "text/html"),
    ),
    Op(
        "get",
        "/v1/forecasts/capacity",
        "Forecast GPU demand against private capacity per model and hour, the burst the "
        "planner would start now, and its reasoning (operator)",
        200,
        None,
        None,
        (401, 403, 422),
        params=(
            _q(
                "horizon",
                "hours ahead, 1 to 48 (e.g. 24h; default 24h)",
                {"type": "string", "pattern": "^([0-9]{1,3}h?)?$"},
            ),
        ),
    ),
    Op(
        "get",
        "/v1/capacity/actions",
        "Bursts and reclaims requested in a period, with the period's cloud cost and carbon "
        "(operator)",
        200,
        None,
        None,
        (401, 403, 422),
        params=(
            _q("from", "start, RFC 3339 (default: `to` minus 7 days)", _TIME),
            _q("to", "end, exclusive, RFC 3339 (default: now)", _TIME),
            _q("kind", "burst or reclaim", {"type": "string", "enum": ["burst", "reclaim"]}),
        ),
    ),
    Op("get", "/healthz", "Liveness", 200, HealthOut, auth=False),
    Op(
        "get",
        "/readyz",
        "Readiness: database reachable and schema current",
        200,
        HealthOut,
        auth=False,
    ),
    Op(
        "get",
        "/metrics",
        "Prometheus metrics, fleet-wide (operator)",
        200,
        None,
        None,
        (401, 403),
        media="text/plain; version=0.0.4",
        auth_setting="auth.metrics_token_required",
    ),
    Op("get", "/openapi.json", "This document", 200, None, auth=False),
    Op("get", "/docs", "API documentation page", 200, None, auth=False, media="text/html"),
)

_MODELS: tuple[type[BaseModel], ...] = (
    TokenListOut,
    ProviderListOut,
    JobIn,
    JobOut,
    JobPageOut,
    ExplainOut,
    JobExplainOut,
    SiteListOut,
    InventoryOut,
    HealthOut,
    Problem,
    ProviderListOut,
    ScheduleOut,
    ServiceIn,
    ServiceOut,
    ServicePageOut,
    SignalIn,
    SignalOut,
)
_REQUESTS = (JobIn, ServiceIn, SignalIn)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation" if m in _REQUESTS else "serialization") for m in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {op.media: {"schema": _ref(op.response)}}
        elif op.media == "application/json":
            ok["content"] = {op.media: {"schema": {"type": "object"}}}
        else:
            ok["content"] = {op.media: {"schema": {"type": "string"}}}
        ok["content"].update({media: {"schema": {"type": "string"}} for media in op.also})
        responses: dict[str, Any] = {str(op.ok): ok}
        # every route that reads the database may answer 503 when it is overloaded
        errors = op.errors + ((503,) if op.path == "/readyz" or op.auth else ())
        for status in errors:
            ready = op.path == "/readyz"
            schema = _ref(HealthOut) if ready and status == 503 else _ref(Problem)
            media = "application/json" if ready and status == 503 else PROBLEM_JSON
            responses[str(status)] = {
                "description": "Not ready" if ready and status == 503 else _ERRORS[status],
                "content": {media: {"schema": schema}},
            }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "responses": responses,
            "operationId": f"{op.method}_{_slug(op.path)}",
        }
        if op.params:
            operation["parameters"] = list(op.params)
        if op.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.request)}},
            }
        if op.patch:  # a merge patch of the body: any subset of its fields, nulls remove
            operation["requestBody"] = {
                "required": True,
                "content": {
                    media: {"schema": {"type": "object"}}
                    for media in ("application/merge-patch+json", "application/json")
                },
            }
        if op.auth_setting is not None:  # a token, or none when the setting is off
            operation["security"] = [{"bearer": []}, {}]
            operation["description"] = (
                f"Needs an operator's or admin's token unless the setting `{op.auth_setting}` "
                "is off (as in the demo config)."
            )
        else:
            operation["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "GPU federation broker",
            "version": __version__,
            "description": "Carbon-aware placement of GPU jobs across private Kubernetes "
            "clusters and cloud regions. Errors are RFC 9457 problem "
            "documents (application/problem+json).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _slug(path: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in path).strip("_")


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GPU federation broker API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem}
.op{border:1px solid #d5dde6;border-radius:6px;margin:.8rem 0;padding:.6rem .9rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#1f6feb}.post{color:#1a7f37}.delete{color:#cf222e}
code{background:#f3f5f7;padding:0 .2rem}
details pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:12px}
</style></head><body>
<h1>GPU federation broker API</h1>
<p>Machine-readable: <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).
Every <code>/v1</code> route needs <code>Authorization: Bearer &lt;token&gt;</code>.
Errors are <code>application/problem+json</code> (RFC 9457).</p>
<div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const el = document.getElementById('ops'); el.textContent = '';
  const schemas = doc.components.schemas;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const d = document.createElement('div'); d.className = 'op';
      const head = document.createElement('div');
      head.innerHTML = `<span class="m ${method}">${method}</span> <code></code> — `;
      head.querySelector('code').textContent = path;
      head.append(document.createTextNode(op.summary));
      d.append(head);
      const codes = Object.keys(op.responses).join(', ');
      const p = document.createElement('div'); p.textContent = 'Responses: ' + codes; d.append(p);
      const body = op.requestBody && op.requestBody.content['application/json'].schema.$ref;
      if (body) {
        const name = body.split('/').pop();
        const det = document.createElement('details');
        det.innerHTML = `<summary>Request body: ${name}</summary><pre></pre>`;
        det.querySelector('pre').textContent = JSON.stringify(schemas[name], null, 2);
        d.append(det);
      }
      el.append(d);
    }
  }
});
</script></body></html>
"""
