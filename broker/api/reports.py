"""`GET /v1/reports/sustainability`: the runs that ended in a period, grouped, as JSON, CSV or
HTML. Users see their own tenant's runs; operators and admins see every tenant's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from broker.api.context import principal
from broker.api.keys import CAPACITY, CLOCK, STORE
from broker.api.problems import ApiProblem, validation_problem
from broker.api.schemas import ProblemField
from broker.burst.report import totals
from broker.reports.html import to_html
from broker.reports.sustainability import GroupBy, build, to_csv

routes = web.RouteTableDef()

PARAMS = {"from", "to", "group_by", "format"}
FORMATS = {"json", "csv", "html"}
DEFAULT_SPAN = timedelta(days=30)
MAX_SPAN = timedelta(days=366)


def _bad(field: str, kind: str, message: str) -> ApiProblem:
    return validation_problem([ProblemField(field=field, type=kind, message=message)])


def moment(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(name, "datetime", "an RFC 3339 time, e.g. 2026-11-01T00:00:00Z") from None
    if value.tzinfo is None:
        raise _bad(name, "datetime", "needs a UTC offset, e.g. Z or +01:00")
    return value.astimezone(UTC)


@routes.get("/v1/reports/sustainability")
async def sustainability(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    unknown = sorted(set(request.query) - PARAMS)
    if unknown:
        raise validation_problem(
            [
                ProblemField(field=n, type="unknown_parameter", message="unknown query parameter")
                for n in unknown
            ]
        )
    now = request.app[CLOCK].now()
    end = moment(request, "to") or now
    start = moment(request, "from") or end - DEFAULT_SPAN
    if start >= end:
        raise _bad("from", "range", "must be before `to`")
    if end - start > MAX_SPAN:
        raise _bad("from", "range", "a report spans at most 366 days")
    try:
        group_by = GroupBy(request.query.get("group_by", GroupBy.TENANT.value))
    except ValueError:
        allowed = ", ".join(g.value for g in GroupBy)
        raise _bad("group_by", "enum", f"must be among: {allowed}") from None
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        raise _bad("format", "enum", f"must be among: {', '.join(sorted(FORMATS))}")
    runs = await request.app[STORE].footprints(start=start, end=end)
    if not who.sees_all_tenants():
        runs = [r for r in runs if r.tenant == who.tenant]
    report = build(runs, start=start, end=end, group_by=group_by)
    if fmt == "csv":
        return web.Response(text=to_csv(report), content_type="text/csv", charset="utf-8")
    # Burst capacity is fleet-wide (one instance serves several tenants): operators only.
    capacity = None
    if who.sees_all_tenants():
        store, until = request.app[CAPACITY], max(start, min(end, now))
        capacity = totals(
            actions=await store.actions(start=start, end=end),
            instances=await store.instances_between(start=start, end=until),
            start=start,
            end=until,
        ).as_dict()
    if fmt == "html":
        page = to_html(report, generated_at=now, capacity=capacity)
        return web.Response(text=page, content_type="text/html", charset="utf-8")
    body = report.as_dict()
    if capacity is not None:
        body["cloud_capacity"] = capacity
    return web.json_response(body)
