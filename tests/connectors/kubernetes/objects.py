"""Kubernetes objects as the API server serves them: nodes labelled by GPU Feature Discovery,
pods, Status bodies, the Job controller's view of a Job's pods and conditions, the
Deployment and ReplicaSet controllers' view of a one-pod Deployment, and a Service's
defaults.

Shapes follow the API reference (https://kubernetes.io/docs/reference/kubernetes-api/);
the fake server stores and returns these dicts as JSON.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

JsonDict = dict[str, Any]

H100 = "NVIDIA-H100-80GB-HBM3"
A100_80 = "NVIDIA-A100-SXM4-80GB"
L4 = "NVIDIA-L4"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def status(code: int, reason: str, message: str, **details: Any) -> JsonDict:
    """A failure `Status` (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/)."""
    body: JsonDict = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def gpu_node(
    name: str,
    *,
    product: str = H100,
    gpus: int = 8,
    memory_mib: int = 81559,
    mig: dict[str, int] | None = None,
    shared_replicas: int | None = None,
    ready: bool = True,
    unschedulable: bool = False,
    taints: list[JsonDict] | None = None,
    labels: dict[str, str] | None = None,
    cpu: str = "190",
    memory: str = "2000Gi",
) -> JsonDict:
    """A GPU node as the GPU operator leaves it: GFD labels and device-plugin resources.

    `mig` ({"3g.40gb": 2}) gives the mixed strategy's `nvidia.com/mig-*` resources (all GPUs
    partitioned); `shared_replicas` gives time-slicing with renameByDefault; `labels` are
    added to GFD's (a node pool's, say).
    """
    labels = {
        **(labels or {}),
        "kubernetes.io/hostname": name,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": str(gpus),
    }
    alloc: JsonDict = {"cpu": cpu, "memory": memory, "pods": "110"}
    if mig:
        labels["nvidia.com/mig.strategy"] = "mixed"
        alloc.update({f"nvidia.com/mig-{p}": str(n) for p, n in mig.items()})
    elif shared_replicas:
        labels["nvidia.com/gpu.replicas"] = str(shared_replicas)
        alloc["nvidia.com/gpu.shared"] = str(gpus * shared_replicas)
    else:
        alloc["nvidia.com/gpu"] = str(gpus)
    spec: JsonDict = {}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    ready_condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
    }
    return {
        "metadata": {"name": name, "uid": new_uid(), "labels": labels, "creationTimestamp": now()},
        "spec": spec,
        "status": {
            "capacity": dict(alloc),
            "allocatable": alloc,
            "conditions": [{"type": "MemoryPressure", "status": "False"}, ready_condition],
        },
    }


def cpu_node(name: str) -> JsonDict:
    return {
        "metadata": {"name": name, "uid": new_uid(), "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(
    name: str,
    *,
    namespace: str = "team-a",
    node: str | None,
    limits: dict[str, str] | None = None,
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    init_limits: dict[str, str] | None = None,
) -> JsonDict:
    """A pod of some other user asking for GPUs (as limits, the usual way)."""
    spec: JsonDict = {
        "containers": [{"name": "main", "image": "busybox", "resources": {"limits": limits or {}}}],
        "restartPolicy": "Never",
    }
    if node:
        spec["nodeName"] = node
    if init_limits:
        spec["initContainers"] = [
            {"name": "init", "image": "busybox", "resources": {"limits": init_limits}}
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": new_uid(),
            "labels": labels or {},
            "creationTimestamp": now(),
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def job_pod(job: JsonDict, *, index: int, node: str | None) -> JsonDict:
    """A pod the Job controller creates from the Job's template."""
    meta = job["metadata"]
    template = job["spec"]["template"]
    suffix = uuid.uuid4().hex[:5]
    indexed = job["spec"].get("completionMode") == "Indexed"
    name = f"{meta['name']}-{index}-{suffix}" if indexed else f"{meta['name']}-{suffix}"
    spec = dict(template["spec"])
    if node:
        spec["nodeName"] = node
    annotations = dict(template["metadata"].get("annotations") or {})
    if indexed:
        annotations["batch.kubernetes.io/job-completion-index"] = str(index)
    containers = spec["containers"]
    return {
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "uid": new_uid(),
            "labels": dict(template["metadata"]["labels"]),
            "annotations": annotations,
            "creationTimestamp": now(),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "startTime": now(),
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now()}},
                }
                for c in containers
            ],
        },
    }


def unschedulable(pod_obj: JsonDict, *, message: str) -> None:
    """The scheduler found no node for the pod: Pending, unbound, PodScheduled False."""
    pod_obj["spec"].pop("nodeName", None)
    pod_obj["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": None,
                "lastTransitionTime": now(),
            }
        ],
    }


def schedulable(node: JsonDict) -> bool:
    """Whether the scheduler binds new pods to the node: not cordoned, Ready."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def terminate(pod_obj: JsonDict, *, exit_code: int, reason: str) -> None:
    """The pod's containers ended: Succeeded for exit code 0, else Failed."""
    pod_obj["status"]["phase"] = "Succeeded" if exit_code == 0 else "Failed"
    for cs in pod_obj["status"].get("containerStatuses", []):
        cs.update(ready=False, started=False)
        cs["state"] = {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": now(),
                "finishedAt": now(),
                "containerID": f"containerd://{uuid.uuid4().hex}",
            }
        }


def waiting(pod_obj: JsonDict, *, reason: str, message: str) -> None:
    """The pod's containers never started (ImagePullBackOff, CreateContainerConfigError...)."""
    pod_obj["status"]["phase"] = "Pending"
    for cs in pod_obj["status"].get("containerStatuses", []):
        cs.update(ready=False, started=False)
        cs["state"] = {"waiting": {"reason": reason, "message": message}}


JOB_FAILURE_MESSAGES = {
    "BackoffLimitExceeded": "Job has reached the specified backoff limit",
    "DeadlineExceeded": "Job was active longer than specified deadline",
}


def job_conditions(*, succeeded: bool, reason: str | None = None) -> list[JsonDict]:
    """The conditions the Job controller (1.31+) sets on a finished Job."""
    at = now()
    if succeeded:
        pairs = [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
        message = "Reached expected number of succeeded pods"
    else:
        reason = reason or "BackoffLimitExceeded"
        pairs = [("FailureTarget", reason), ("Failed", reason)]
        message = JOB_FAILURE_MESSAGES.get(reason, reason)
    return [
        {
            "type": kind,
            "status": "True",
            "reason": why,
            "message": message,
            "lastProbeTime": at,
            "lastTransitionTime": at,
        }
        for kind, why in pairs
    ]


# -- apps/v1 Deployments and core/v1 Services -------------------------------------------------
# https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/
# https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the ReplicaSet controller's safe encoding


def template_hash(template: JsonDict) -> str:
    """A `pod-template-hash` shaped like the controller's (10 safe characters)."""
    encoded = json.dumps(template, sort_keys=True).encode()
    digest = int.from_bytes(hashlib.sha256(encoded).digest()[:8], "big")
    out = []
    for _ in range(10):
        digest, index = divmod(digest, len(_HASH_ALPHABET))
        out.append(_HASH_ALPHABET[index])
    return "".join(out)


def deployment_pod(
    deploy: JsonDict, *, replica_set: str, replica_set_uid: str, node: str | None, ready: bool
) -> JsonDict:
    """The pod the ReplicaSet controller makes from a Deployment's template: named
    `<deployment>-<hash>-<5 random>`, labelled as the template plus `pod-template-hash`."""
    template = deploy["spec"]["template"]
    pod_hash = replica_set.rsplit("-", 1)[1]
    spec = dict(template["spec"])
    if node:
        spec["nodeName"] = node
    containers = spec["containers"]
    pod_obj: JsonDict = {
        "metadata": {
            "name": f"{replica_set}-{uuid.uuid4().hex[:5]}",
            "namespace": deploy["metadata"]["namespace"],
            "uid": new_uid(),
            "labels": {**template["metadata"].get("labels", {}), "pod-template-hash": pod_hash},
            "annotations": dict(template["metadata"].get("annotations") or {}),
            "creationTimestamp": now(),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": replica_set,
                    "uid": replica_set_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "startTime": now(),
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now()}},
                }
                for c in containers
            ],
        },
    }
    set_pod_ready(pod_obj, ready=ready)
    return pod_obj


def set_pod_ready(pod_obj: JsonDict, *, ready: bool) -> None:
    """The kubelet's readiness probe passed (or not yet): the pod's Ready condition."""
    status = pod_obj["status"]
    for cs in status.get("containerStatuses", []):
        cs["ready"] = ready
    at = now()
    status["conditions"] = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {
            "type": "ContainersReady",
            "status": "True" if ready else "False",
            "lastTransitionTime": at,
            **({} if ready else {"reason": "ContainersNotReady"}),
        },
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastTransitionTime": at,
            **({} if ready else {"reason": "ContainersNotReady"}),
        },
    ]


def _deployment_condition(kind: str, status_: str, reason: str, message: str) -> JsonDict:
    at = now()
    return {
        "type": kind,
        "status": status_,
        "lastUpdateTime": at,
        "lastTransitionTime": at,
        "reason": reason,
        "message": message,
    }


def deployment_status(
    deploy: JsonDict, *, replica_set: str, ready: bool, timed_out: bool = False
) -> JsonDict:
    """What the Deployment controller reports for a one-pod Deployment: progressing, then
    available once the pod is ready, or timed out past its progress deadline."""
    generation = deploy["metadata"]["generation"]
    status: JsonDict = {"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1}
    if ready:
        status.update(readyReplicas=1, availableReplicas=1)
        available = _deployment_condition(
            "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
        )
        progressing = _deployment_condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{replica_set}" has successfully progressed.',
        )
    else:
        status["unavailableReplicas"] = 1
        available = _deployment_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
        progressing = (
            _deployment_condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{replica_set}" has timed out progressing.',
            )
            if timed_out
            else _deployment_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{replica_set}" is progressing.',
            )
        )
    status["conditions"] = [available, progressing]
    return status


def service_defaults(service: JsonDict, *, cluster_ip: str) -> None:
    """What the API server fills in on a ClusterIP Service's create."""
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.update(
        clusterIP=cluster_ip,
        clusterIPs=[cluster_ip],
        ipFamilies=["IPv4"],
        ipFamilyPolicy="SingleStack",
        internalTrafficPolicy="Cluster",
    )
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
    service["status"] = {"loadBalancer": {}}
