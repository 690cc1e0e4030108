"""Capacity: the demand forecast against private GPUs and what bursting would do about it
(`GET /v1/forecasts/capacity`), and every burst and reclaim with its cost and carbon
(`GET /v1/capacity/actions`). Operators and admins only: they show every tenant's demand."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from broker.api.auth import require
from broker.api.context import principal
from broker.api.keys import BURSTER, CAPACITY, CLOCK, DEMAND, SETTINGS
from broker.api.query import field_problem, given, period, reject_unknown
from broker.burst.model import BurstAction, Plan, Skipped
from broker.domain.capacity import ActionKind, CapacityAction
from broker.domain.enums import Role
from broker.scheduling.forecaster import CapacityOutlook

routes = web.RouteTableDef()

_HORIZON = re.compile(r"([0-9]{1,3})h?")  # not \d, which also matches "²" that int() refuses
MAX_HORIZON_H = 48


def _horizon(request: web.Request) -> int:
    raw = given(request, "horizon") or "24h"
    match = _HORIZON.fullmatch(raw)
    hours = int(match.group(1)) if match else 0
    if not 1 <= hours <= MAX_HORIZON_H:
        raise field_problem("horizon", "range", f"hours from 1 to {MAX_HORIZON_H}, e.g. 24h")
    return hours


@routes.get("/v1/forecasts/capacity")
async def capacity_forecast(request: web.Request) -> web.Response:
    """Per GPU model: forecast demand vs private GPUs per hour, the burst planned, and why."""
    require(principal(request), Role.OPERATOR)
    reject_unknown(request, {"horizon"})
    hours = _horizon(request)
    outlook = await request.app[DEMAND].outlook(hours=hours)
    burst = request.app[SETTINGS].burst
    plan: Plan | None = None
    unreachable: dict[str, str] = {}
    if BURSTER in request.app:
        plan, unreachable = await request.app[BURSTER].preview()
    body = {
        "origin": outlook.origin.isoformat(),
        "horizon_h": hours,
        "quantile": outlook.quantile,
        "method": outlook.method.value,
        "fitted_at": None if outlook.fitted_at is None else outlook.fitted_at.isoformat(),
        "models": _models(outlook),
        "burst": {
            "enabled": burst.enabled and bool(burst.targets),
            "planned": [_action(a) for a in plan.actions] if plan else [],
            "skipped": [_skipped(s) for s in plan.skipped] if plan else [],
            "unreachable": unreachable,
        },
        "reasoning": _reasoning(outlook, plan, enabled=burst.enabled and bool(burst.targets)),
    }
    return web.json_response(body)


def _models(outlook: CapacityOutlook) -> list[dict[str, Any]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for s in outlook.shortfalls:
        rows.setdefault(s.gpu_model, []).append(
            {
                "at": s.at.isoformat(),
                "demand_gpus": round(s.demand, 2),
                "capacity_gpus": round(s.capacity, 2),
                "shortfall_gpus": round(s.shortfall, 2),
            }
        )
    return [
        {
            "gpu_model": model,
            "private_gpus": outlook.private_gpus.get(model, 0.0),
            "peak_demand_gpus": max(h["demand_gpus"] for h in hours),
            "peak_shortfall_gpus": max(h["shortfall_gpus"] for h in hours),
            "hours": hours,
        }
        for model, hours in sorted(rows.items())
    ]


def _action(a: BurstAction) -> dict[str, Any]:
    return {
        "provider_site": a.provider_site,
        "joins_site": a.joins_site,
        "gpu_model": a.gpu_model,
        "count": a.count,
        "spot": a.spot,
        "usd_per_hour": round(a.usd_per_hour, 4),
        "gco2e_per_hour": None if a.gco2e_per_hour is None else round(a.gco2e_per_hour, 1),
        "expected_usd": round(a.expected_usd, 2),
        "reason": a.reason,
        "for_jobs": list(a.for_jobs),
    }


def _skipped(s: Skipped) -> dict[str, Any]:
    return {
        "reason": s.reason.value,
        "detail": s.detail,
        "gpu_model": s.gpu_model,
        "job_ids": list(s.job_ids),
    }


def _reasoning(outlook: CapacityOutlook, plan: Plan | None, *, enabled: bool) -> list[str]:
    lines = [
        f"demand forecast by {outlook.method.value} at the p{round(outlook.quantile * 100)}, "
        f"{outlook.hours} h from {outlook.origin:%Y-%m-%d %H:%M} UTC"
    ]
    peaks = outlook.peak_shortfall()
    for model, short in sorted(peaks.items()):
        if short > 0:
            worst = max(
                (s for s in outlook.shortfalls if s.gpu_model == model), key=lambda s: s.shortfall
            )
            lines.append(
                f"{model}: {worst.demand:.1f} GPUs wanted at {worst.at:%H:%M} against "
                f"{worst.capacity:.0f} private, {short:.1f} short"
            )
    if len(lines) == 1:
        lines.append("private capacity covers the forecast")
    if not enabled:
        lines.append("bursting is off: nothing will be provisioned")
    elif plan is not None:
        lines += [
            f"burst {a.count} x {a.gpu_model} on {a.provider_site}: {a.reason}"
            for a in plan.actions
        ]
        lines += [f"not bursting ({s.reason.value}): {s.detail}" for s in plan.skipped]
        if not plan.actions and not plan.skipped:
            lines.append("no burst needed now")
    return lines


@routes.get("/v1/capacity/actions")
async def capacity_actions(request: web.Request) -> web.Response:
    """Bursts and reclaims requested in a period, with the period's cloud cost and carbon."""
    require(principal(request), Role.OPERATOR)
    reject_unknown(request, {"from", "to", "kind"})
    now = request.app[CLOCK].now()
    start, end = period(
        request, now=now, default_span=timedelta(days=7), too_long="a period spans at most 366 days"
    )
    kind: ActionKind | None = None
    if (raw_kind := given(request, "kind")) is not None:
        try:
            kind = ActionKind(raw_kind)
        except ValueError:
            allowed = ", ".join(k.value for k in ActionKind)
            raise field_problem("kind", "enum", f"must be among: {allowed}") from None
    store = request.app[CAPACITY]
    actions = await store.actions(start=start, end=end, kind=kind)
    spent = await store.period_totals(start=start, end=end, now=now)
    return web.json_response(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "totals": spent.as_dict(),
            "items": [action_json(a) for a in actions],
        }
    )


def action_json(a: CapacityAction) -> dict[str, Any]:
    """One action as the API shows it."""

    def stamp(t: datetime | None) -> str | None:
        return None if t is None else t.isoformat()

    return {
        "id": a.id,
        "kind": a.kind.value,
        "state": a.state.value,
        "provider_site": a.provider_site,
        "joins_site": a.joins_site,
        "gpu_model": a.gpu_model,
        "count": a.count,
        "spot": a.spot,
        "instance_ids": list(a.instance_ids),
        "reason": a.reason,
        "for_jobs": list(a.for_jobs),
        "tenants": dict(a.tenants),
        "requested_at": stamp(a.requested_at),
        "ready_at": stamp(a.ready_at),
        "released_at": stamp(a.released_at),
        "usd_per_hour": a.usd_per_hour,
        "gco2e_per_hour": a.gco2e_per_hour,
        "cost_usd": a.cost_usd,
        "gco2e": a.gco2e,
        "detail": a.detail,
    }
