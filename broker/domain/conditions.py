"""Why a job that is not running is where it is: its current condition.

Shaped like a Kubernetes condition (`type`, a CamelCase `reason`, a `message`, and `since`,
the `lastTransitionTime`): one per job, the scheduler's latest word on it, kept in the
database so every API replica serves the same answer. `since` moves only when the type
or reason changes; a new message with the same reason (fresher figures) keeps it, so it
says how long the job has waited for *this* reason. A job that is placed has none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class ConditionType(enum.StrEnum):
    WAITING = "Waiting"  # pending: the scheduler looked and could not place it
    DEFERRED = "Deferred"  # held for a cleaner window
    PREEMPTED = "Preempted"  # back in the queue after losing its GPUs


class Reason(enum.StrEnum):
    # Waiting
    NO_CAPACITY = "NoCapacity"  # no pool of its shape has room now (the message names why)
    NO_MATCHING_POOL = "NoMatchingPool"  # no site offers a pool of its shape at all
    QUOTA_CAP_REACHED = "QuotaCapReached"  # its tenant's cap for the tier (nominal + limit)
    QUOTA_RESERVED = "QuotaReserved"  # the free GPUs are other tenants' unused guarantees
    WAITING_FOR_BURST = "WaitingForBurstCapacity"  # a burst action was started for it
    # Deferred
    CARBON_WINDOW = "CarbonWindow"
    # Preempted
    PREEMPTED_BY_HIGHER_TIER = "PreemptedByHigherTier"
    QUOTA_RECLAIMED = "QuotaReclaimed"  # it ran on borrowed quota and the owner took it back
    STOPPED_BY_SITE = "StoppedBySite"  # its site stopped it (node gone, spot reclaim)


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: ConditionType
    reason: Reason
    message: str
    since: datetime

    def same_as(self, other: Condition | None) -> bool:
        """Whether `other` says the same thing (whatever its `since`)."""
        return (
            other is not None
            and other.type is self.type
            and other.reason is self.reason
            and other.message == self.message
        )

    def after(self, previous: Condition | None) -> Condition:
        """This condition as the job's next: it keeps `previous.since` for the same reason."""
        if previous is not None and (previous.type, previous.reason) == (self.type, self.reason):
            return Condition(
                type=self.type, reason=self.reason, message=self.message, since=previous.since
            )
        return self


# A capacity wait says less than these about a job that waits for capacity anyway: the
# scheduler keeps them instead (a preempted job waits because its GPUs went to another).
STICKY_OVER_NO_CAPACITY = frozenset({Reason.PREEMPTED_BY_HIGHER_TIER, Reason.QUOTA_RECLAIMED})
