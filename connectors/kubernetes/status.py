"""A Job's (or a replica Deployment's) status → the broker's job state, through tables, and
why its pod failed.

The Job controller marks a finished Job with a condition of type `Complete` or `Failed`
(status "True", with a reason such as BackoffLimitExceeded or DeadlineExceeded); before
that, `status.active` counts its pending and running pods. Those are the only signals used:
https://kubernetes.io/docs/concepts/workloads/controllers/job/#terminal-job-conditions
The pod's own story (a container terminated with OOMKilled and exit code 137, or waiting in
ImagePullBackOff) is read from its container statuses:
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#PodStatus
A service replica's Deployment (one pod) is RUNNING once the Deployment controller has seen
its current spec (`status.observedGeneration >= metadata.generation`) and its pod is ready
(`status.readyReplicas >= 1`); it has FAILED when its `Progressing` condition turned False
with reason ProgressDeadlineExceeded (the pod never became ready within
`progressDeadlineSeconds`). Until then the broker keeps it SCHEDULED:
https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.enums import JobState

JsonDict = dict[str, Any]
_MAX_DETAIL = 1000  # termination messages may run to 4 KiB

# Terminal Job condition type (with status "True") → job state.
CONDITION_STATES: Mapping[str, JobState] = {
    "Complete": JobState.SUCCEEDED,
    "Failed": JobState.FAILED,
}

# A replica Deployment's condition (type, status, reason) → job state.
DEPLOYMENT_CONDITION_STATES: Mapping[tuple[str, str, str], JobState] = {
    ("Progressing", "False", "ProgressDeadlineExceeded"): JobState.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobChange:
    state: JobState
    reason: str
    detail: str
    # When the site says it happened (the Job's startTime, the condition's transition), so
    # start and end share the cluster's clock and a Job that ended while the broker was down
    # keeps its real end; None: the broker's clock at the time it sees the change.
    at: datetime | None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as the API writes it ("2024-05-01T12:00:00Z")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def job_change(obj: JsonDict) -> JobChange | None:
    """The state a Job is in as far as the broker cares, or None while nothing has started."""
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        state = CONDITION_STATES.get(str(cond.get("type")))
        if state is not None and cond.get("status") == "True":
            return JobChange(
                state=state,
                reason=str(cond.get("reason") or cond.get("type")),
                detail=str(cond.get("message") or ""),
                at=parse_time(cond.get("lastTransitionTime")),
            )
    active = int(status.get("active") or 0)
    if active > 0:
        return JobChange(
            state=JobState.RUNNING,
            reason="started",
            detail=f"{active} pod{'s' if active != 1 else ''} active",
            at=parse_time(status.get("startTime")),
        )
    return None


def replica_change(obj: JsonDict) -> JobChange | None:
    """The state a replica's Deployment is in, or None while its pod is not ready yet."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    for cond in conditions:
        key = (str(cond.get("type")), str(cond.get("status")), str(cond.get("reason")))
        state = DEPLOYMENT_CONDITION_STATES.get(key)
        if state is not None:
            return JobChange(
                state=state,
                reason=key[2],
                detail=str(cond.get("message") or ""),
                at=parse_time(cond.get("lastTransitionTime")),
            )
    observed = int(status.get("observedGeneration") or 0)
    ready = int(status.get("readyReplicas") or 0)
    if ready >= 1 and observed >= int(meta.get("generation") or 0):
        available: JsonDict = next(
            (c for c in conditions if c.get("type") == "Available" and c.get("status") == "True"),
            {},
        )
        return JobChange(
            state=JobState.RUNNING,
            reason="ready",
            detail=f"{ready} pod{'s' if ready != 1 else ''} ready",
            at=parse_time(available.get("lastTransitionTime")),
        )
    return None


def _describe_container(cs: JsonDict) -> str | None:
    state = cs.get("state") or {}
    name = cs.get("name", "?")
    term = state.get("terminated")
    if term and (
        term.get("exitCode") not in (0, None) or term.get("reason") not in ("Completed", None)
    ):
        reason = term.get("reason") or "Error"
        message = f": {term['message']}" if term.get("message") else ""
        return f"container {name} terminated: {reason} (exit code {term.get('exitCode')}){message}"
    waiting = state.get("waiting")
    if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
        message = f": {waiting['message']}" if waiting.get("message") else ""
        return f"container {name} waiting: {waiting['reason']}{message}"
    return None


def pod_failure(pod: JsonDict) -> str | None:
    """What went wrong with one pod, or None when nothing visibly did."""
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    found = [d for d in map(_describe_container, statuses) if d]
    if found:
        return f"pod {name}: " + "; ".join(found)
    if status.get("reason"):  # Evicted, DeadlineExceeded, ...
        message = f": {status['message']}" if status.get("message") else ""
        return f"pod {name}: {status['reason']}{message}"
    return None


def failure_detail(condition_message: str, pods: Iterable[JsonDict]) -> str:
    """The condition's message and what the first telling pod says (failed pods first,
    then newest first)."""
    ordered = sorted(
        pods,
        key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")),
        reverse=True,
    )
    ordered.sort(key=lambda p: (p.get("status") or {}).get("phase") != "Failed")
    why = next((d for d in map(pod_failure, ordered) if d), None)
    return "; ".join(part for part in (condition_message, why) if part)[:_MAX_DETAIL]
