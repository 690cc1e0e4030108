"""What the broker records of burst capacity: actions (a burst or a reclaim) and instances.

An action is the unit operators read ("2 x H100 on aws-us-east-1 for 3 waiting P1 jobs",
"released 2 instances idle 31 min"); an instance is the unit the broker pays for, so cost
and carbon are counted per instance, from its launch to its release, and summed per action.

A burst goes requested → ready (every instance's node joined its cluster) → released (the
last instance let go), or requested → failed (the provider refused, or nothing joined in
time). A reclaim is recorded once, already released, with what the instances it let go cost.

Totals over a period count cost and emissions per instance over the part of the period it
ran, so a burst that spans midnight splits between the days, as budgets do. Emissions are
the burster's estimate for whole instances (board power x PUE x the zone's intensity when
the burst was made), idle time included: an upper bound that overlaps the run footprints
of the jobs that ran on the capacity, so a report shows it beside them, never added to them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class ActionKind(enum.StrEnum):
    BURST = "burst"
    RECLAIM = "reclaim"


class ActionState(enum.StrEnum):
    REQUESTED = "requested"
    READY = "ready"
    FAILED = "failed"
    RELEASED = "released"

    @property
    def open(self) -> bool:
        return self in (ActionState.REQUESTED, ActionState.READY)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityAction:
    id: str
    kind: ActionKind
    provider_site: str
    joins_site: str
    gpu_model: str
    count: int
    spot: bool
    reason: str
    requested_at: datetime
    usd_per_hour: float  # all its instances together, as estimated when asked for
    gco2e_per_hour: float | None  # None when the grid zone's intensity was unknown
    state: ActionState
    instance_ids: tuple[str, ...] = ()
    for_jobs: tuple[str, ...] = ()
    tenants: Mapping[str, float] = field(default_factory=dict)  # tenant → share of the cost
    ready_at: datetime | None = None
    released_at: datetime | None = None
    cost_usd: float | None = None  # what its instances cost, once they are all released
    gco2e: float | None = None
    detail: str = ""  # provider errors, zones tried


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstInstance:
    """One cloud instance a burst started, until it is released."""

    provider_site: str
    instance_id: str
    action_id: str
    gpu_model: str
    gpus: int
    zone: str
    spot: bool
    usd_per_hour: float
    gco2e_per_hour: float | None
    launched_at: datetime
    provider_id: str = ""  # the Kubernetes node's spec.providerID it should show up with
    node: str | None = None
    joined_at: datetime | None = None
    idle_since: datetime | None = None
    released_at: datetime | None = None
    release_reason: str = ""
    reclaim_id: str | None = None

    @property
    def alive(self) -> bool:
        return self.released_at is None

    def hours_alive(self, *, start: datetime, end: datetime) -> float:
        """Hours of [start, end) during which it was running (and billed)."""
        lo = max(start, self.launched_at)
        hi = min(end, self.released_at or end)
        return max(0.0, (hi - lo).total_seconds() / 3600)

    def cost_usd(self, *, until: datetime) -> float:
        return self.usd_per_hour * self.hours_alive(start=self.launched_at, end=until)

    def gco2e(self, *, until: datetime) -> float | None:
        if self.gco2e_per_hour is None:
            return None
        return self.gco2e_per_hour * self.hours_alive(start=self.launched_at, end=until)


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
