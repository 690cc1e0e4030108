"""What the broker records of burst capacity: actions (a burst or a reclaim) and instances.

An action is the unit operators read ("2 x H100 on aws-us-east-1 for 3 waiting P1 jobs",
"released 2 instances idle 31 min"); an instance is the unit the broker pays for, so cost
and carbon are counted per instance, from its launch to its release, and summed per action.

A burst goes requested → ready (every instance's node joined its cluster) → released (the
last instance let go), or requested → failed (the provider refused, or nothing joined in
time). A reclaim is recorded once, already released, with what the instances it let go cost.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


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
