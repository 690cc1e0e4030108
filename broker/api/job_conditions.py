"""Which waiting jobs a burst is on its way for, shown as their condition when read.

The burster records each burst with the jobs it was bought for (`CapacityAction.for_jobs`)
and keeps it open until its nodes join or it fails. A job's stored condition comes from
the scheduler's passes, which do not know about bursts; rather than have the burster
write conditions it would then have to take back when a burst fails, an API read lays
the open burst over a pending job's capacity wait. Open actions are few (one per target
and GPU model at most), so this is one small query per read.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from broker.api.keys import CAPACITY
from broker.domain.capacity import ActionKind
from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.enums import JobState
from broker.domain.jobs import Job


async def burst_waits(request: web.Request, jobs: Iterable[Job]) -> dict[str, Condition]:
    """Job id → a WaitingForBurstCapacity condition, for pending jobs an open burst is for."""
    waiting = {
        j.id: j
        for j in jobs
        if j.state is JobState.PENDING
        and (j.condition is None or j.condition.reason is Reason.NO_CAPACITY)
    }
    if not waiting or CAPACITY not in request.app:
        return {}
    out: dict[str, Condition] = {}
    for action in await request.app[CAPACITY].open_actions():
        if action.kind is not ActionKind.BURST:
            continue
        for job_id in action.for_jobs:
            if job_id in waiting and job_id not in out:
                out[job_id] = Condition(
                    type=ConditionType.WAITING,
                    reason=Reason.WAITING_FOR_BURST,
                    message=(
                        f"burst action {action.id}: {action.count} × {action.gpu_model} "
                        f"from {action.provider_site}, joining {action.joins_site}"
                    ),
                    since=action.requested_at,
                )
    return out
