"""Closed sets of names the whole broker shares, and the job state machine."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class SiteKind(enum.StrEnum):
    KUBERNETES = "kubernetes"
    AWS = "aws"
    GCP = "gcp"
    SIM = "sim"


class Ability(enum.StrEnum):
    """What a site's connector can do; a site declares the ones it lacks (`Site.lacks`)."""

    DISPATCH = "dispatch"
    CANCEL = "cancel"
    FOLLOW = "follow"  # reports job status
    PROVISION = "provision"  # can add capacity (clouds)
    MIG = "mig"
    FRACTIONAL_GPU = "fractional_gpu"
    GANG = "gang"  # multi-node jobs, all nodes at once
    SPOT = "spot"


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"

    @property
    def takes_work(self) -> bool:
        """Whether new work may be placed: a degraded site's pools already leave out its
        cordoned, NotReady or tainted nodes (e.g. a burst node still booting)."""
        return self in (Health.HEALTHY, Health.DEGRADED)


class Tier(enum.StrEnum):
    """Priority tiers; the lower the rank, the more urgent."""

    P1 = "P1"  # realtime inference: never waits behind lower tiers
    P2 = "P2"  # batch training
    P3 = "P3"  # experiments: preemptible by default

    @property
    def rank(self) -> int:
        return int(self.value[1])


class JobKind(enum.StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"
    EXPERIMENT = "experiment"


class JobState(enum.StrEnum):
    PENDING = "pending"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PREEMPTED = "preempted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def holds_capacity(self) -> bool:
        """True while the job owns an allocation on some site."""
        return self in (JobState.SCHEDULED, JobState.RUNNING)


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# Which transitions are legal. `preempted` is a waypoint: a preempted job goes back to
# pending (it is requeued), so its history shows the preemption as its own event.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset(
        {JobState.SCHEDULED, JobState.DEFERRED, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.DEFERRED: frozenset({JobState.PENDING, JobState.SCHEDULED, JobState.CANCELLED}),
    JobState.SCHEDULED: frozenset(
        {
            JobState.RUNNING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PREEMPTED,
            JobState.PENDING,
        }
    ),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED}
    ),
    JobState.PREEMPTED: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS[src]


class Role(enum.StrEnum):
    """What a token may do: users see their tenant's jobs, operators everything."""

    USER = "user"
    OPERATOR = "operator"
    ADMIN = "admin"

    def at_least(self, other: Role) -> bool:
        order = (Role.USER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(other)
