"""The conditions a pass gives the jobs it left waiting, and only those that changed.

The engine says why each job waits (`Wait.code`, `Wait.reason`); this turns that into
the job's condition (`broker.domain.conditions`) and keeps only what differs from the
condition the job already has, as read with the queue. So a pass writes nothing for a
job whose reason did not change, and one batch for those that did: the pass stays as
fast as before (a stuck job is not even planned again until capacity changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from broker.domain.conditions import (
    STICKY_OVER_NO_CAPACITY,
    Condition,
    ConditionType,
    Reason,
)
from broker.domain.engine import Decision, Wait


def changed_conditions(decisions: Sequence[Decision], *, now: datetime) -> dict[str, Condition]:
    """Job id → its new condition, for the waiting jobs whose condition changes."""
    out: dict[str, Condition] = {}
    for d in decisions:
        if not isinstance(d, Wait):
            continue
        current = d.job.condition
        if (
            current is not None
            and current.reason in STICKY_OVER_NO_CAPACITY
            and d.code is Reason.NO_CAPACITY
        ):
            continue  # it lost its GPUs and there is still no room: that says more
        new = Condition(
            type=ConditionType.WAITING, reason=d.code, message=d.reason, since=now
        ).after(current)
        if not new.same_as(current):
            out[d.job.id] = new
    return out
