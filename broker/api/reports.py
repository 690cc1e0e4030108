"""`GET /v1/reports/sustainability`: the runs that ended in a period, grouped, as JSON, CSV or
HTML. Users see their own tenant's runs; operators and admins see every tenant's."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from broker.api.context import principal
from broker.api.keys import CAPACITY, CLOCK, SETTINGS, STORE
from broker.api.query import field_problem, given, period, reject_unknown
from broker.reports.html import to_html
from broker.reports.sustainability import GroupBy, build, to_csv

routes = web.RouteTableDef()

PARAMS = {"from", "to", "group_by", "format"}
FORMATS = {"json", "csv", "html"}
DEFAULT_SPAN = timedelta(days=30)


@routes.get("/v1/reports/sustainability")
async def sustainability(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    reject_unknown(request, PARAMS)
    now = request.app[CLOCK].now()
    start, end = period(
        request, now=now, default_span=DEFAULT_SPAN, too_long="a report spans at most 366 days"
    )
    try:
        group_by = GroupBy(given(request, "group_by") or GroupBy.TENANT.value)
    except ValueError:
        allowed = ", ".join(g.value for g in GroupBy)
        raise field_problem("group_by", "enum", f"must be among: {allowed}") from None
    fmt = given(request, "format") or "json"
    if fmt not in FORMATS:
        raise field_problem("format", "enum", f"must be among: {', '.join(sorted(FORMATS))}")
    runs = await request.app[STORE].footprints(start=start, end=end)
    if not who.sees_all_tenants():
        runs = [r for r in runs if r.tenant == who.tenant]
    basis = request.app[SETTINGS].carbon.basis
    report = build(runs, start=start, end=end, group_by=group_by, basis=basis)
    if fmt == "csv":
        return web.Response(text=to_csv(report), content_type="text/csv", charset="utf-8")
    # Burst capacity is fleet-wide (one instance serves several tenants): operators only.
    capacity = None
    if who.sees_all_tenants():
        period_totals = request.app[CAPACITY].period_totals(start=start, end=end, now=now)
        capacity = (await period_totals).as_dict()
    if fmt == "html":
        page = to_html(report, generated_at=now, capacity=capacity)
        return web.Response(text=page, content_type="text/html", charset="utf-8")
    body = report.as_dict()
    if capacity is not None:
        body["cloud_capacity"] = capacity
    return web.json_response(body)
