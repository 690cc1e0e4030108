"""Burst capacity for the API and the sustainability report: totals over a period, and each
action as JSON. Pure.

Cost and emissions are counted per instance over the part of the period it ran, so a burst
that spans midnight splits between the days, as budgets do. Emissions are the burster's
estimate for whole instances (board power x PUE x the zone's intensity when the burst was
made), idle time included: an upper bound that overlaps the run footprints of the jobs that
ran on the capacity, so a report shows it beside them, never added to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.burst.records import ActionKind, ActionState, BurstInstance, CapacityAction


@dataclass(slots=True)
class CapacityTotals:
    bursts: int = 0
    failed_bursts: int = 0
    reclaims: int = 0
    instances: int = 0  # that ran at some time in the period
    instance_hours: float = 0.0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
    kgco2e: float = 0.0
    unmeasured_instances: int = 0  # no intensity known: cost counted, emissions not
    by_provider: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bursts": self.bursts,
            "failed_bursts": self.failed_bursts,
            "reclaims": self.reclaims,
            "instances": self.instances,
            "instance_hours": round(self.instance_hours, 4),
            "gpu_hours": round(self.gpu_hours, 4),
            "cost_usd": round(self.cost_usd, 4),
            "kgco2e": round(self.kgco2e, 6),
            "unmeasured_instances": self.unmeasured_instances,
            "by_provider": {
                k: {m: round(v, 6) for m, v in vs.items()}
                for k, vs in sorted(self.by_provider.items())
            },
        }


def totals(
    *,
    actions: Sequence[CapacityAction],
    instances: Sequence[BurstInstance],
    start: datetime,
    end: datetime,
) -> CapacityTotals:
    """`actions` requested in [start, end) (`CapacityStore.actions`) and `instances` that ran
    in it (`CapacityStore.instances_between`); `end` is now for a period not over yet."""
    out = CapacityTotals()
    for a in actions:
        if a.kind is ActionKind.RECLAIM:
            out.reclaims += 1
        elif a.state is ActionState.FAILED and not a.instance_ids:
            out.failed_bursts += 1
        else:
            out.bursts += 1
    for inst in instances:
        hours = inst.hours_alive(start=start, end=end)
        cost = inst.usd_per_hour * hours
        row = out.by_provider.setdefault(
            inst.provider_site, {"instance_hours": 0.0, "cost_usd": 0.0, "kgco2e": 0.0}
        )
        out.instances += 1
        out.instance_hours += hours
        out.gpu_hours += hours * inst.gpus
        out.cost_usd += cost
        row["instance_hours"] += hours
        row["cost_usd"] += cost
        if inst.gco2e_per_hour is None:
            out.unmeasured_instances += 1
            continue
        kg = inst.gco2e_per_hour * hours / 1000
        out.kgco2e += kg
        row["kgco2e"] += kg
    return out


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
