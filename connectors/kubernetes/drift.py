"""Where the broker's pods are, against the nodes their placements decided.

A placed job's pods may run only on its placement's nodes (a required node affinity, see
`manifest`). Two things can still part the cluster from the ledger, and both show in the
node and pod lists that inventory reads anyway:

* a stray: a pod bound to a node that is not one of its placement's (a Job created before
  pods were pinned, or one a retried dispatch adopted after the job was placed elsewhere).
  It runs, so it is left alone and reported in the log for an operator;
* a stuck pod: a pinned pod that stays Pending because its node is gone (deleted,
  NotReady or cordoned). The scheduler has said so (`PodScheduled` False, reason
  `Unschedulable`), or the pod is bound to a node the cluster no longer has. It would wait
  for good, so its job goes back to the broker's queue.

A pod that is Pending for another reason (its node is there but full) is not this module's
business. Pods are matched to the Job incarnation the connector follows by their
controller's uid, so a terminating pod of an older Job of the same job id is not judged; a
service replica's pod (its controller a ReplicaSet, not the followed Deployment) is judged
by its job id alone, and a stuck one sends the replica back the same way (its Deployment
deleted, see `follow.requeue`).
Pod conditions: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.kubernetes import labels as L
from connectors.kubernetes.inventory import unschedulable
from connectors.kubernetes.manifest import job_id_of

JsonDict = dict[str, Any]
_BOUND_PHASES = frozenset({"Pending", "Running"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """Where one followed job's pods belong."""

    uid: str | None  # the Job incarnation followed (None: any)
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stray:
    """A pod bound to a node its placement did not decide."""

    job_id: str
    pod: str
    node: str
    expected: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stuck:
    """A pinned pod that cannot be bound: `down` is each gone node and why."""

    job_id: str
    pod: str
    down: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Findings:
    strays: tuple[Stray, ...]
    stuck: tuple[Stuck, ...]


def node_down(node: JsonDict | None) -> str | None:
    """Why no pod can be bound to the node now ("gone", "cordoned", "NotReady"), or None."""
    if node is None:
        return "gone"
    return unschedulable(node)


def findings(
    *,
    pods: Iterable[JsonDict],
    nodes: Iterable[JsonDict],
    owner: str,
    expected: Mapping[str, Expected],
) -> Findings:
    """The strays and stuck pods among the owner's pods of the followed jobs."""
    by_name = {str((n.get("metadata") or {}).get("name", "")): n for n in nodes}
    strays: list[Stray] = []
    stuck: list[Stuck] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(L.OWNER_LABEL) != owner:
            continue
        job_id = job_id_of(pod)
        want = expected.get(job_id or "")
        if job_id is None or want is None or not want.nodes:
            continue
        if want.uid is not None and _controller_uid(pod) not in (None, want.uid):
            continue
        phase = (pod.get("status") or {}).get("phase")
        if phase not in _BOUND_PHASES:
            continue
        name = str(meta.get("name", ""))
        bound = str((pod.get("spec") or {}).get("nodeName") or "")
        if phase == "Pending" and bound and bound not in by_name:
            stuck.append(Stuck(job_id=job_id, pod=name, down=((bound, "gone"),)))
        elif bound and bound not in want.nodes:
            strays.append(Stray(job_id=job_id, pod=name, node=bound, expected=want.nodes))
        elif phase == "Pending" and not bound and _unschedulable(pod):
            down = tuple(
                (n, why) for n in want.nodes if (why := node_down(by_name.get(n))) is not None
            )
            if down:
                stuck.append(Stuck(job_id=job_id, pod=name, down=down))
    return Findings(strays=tuple(strays), stuck=tuple(stuck))


def _unschedulable(pod: JsonDict) -> bool:
    """The scheduler tried the pod and found no node for it."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled":
            return bool(cond.get("status") == "False" and cond.get("reason") == "Unschedulable")
    return False


def _controller_uid(pod: JsonDict) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job":
            return str(ref.get("uid") or "") or None
    return None
