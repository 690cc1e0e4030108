"""The `batch/v1` Job the broker creates for a placed job.

One container (`main`) runs the job's image, command and environment. The GPU ask is a
limit (extended resources need no request): `nvidia.com/gpu: N` for whole GPUs,
`nvidia.com/mig-<profile>: 1` for a MIG slice, `nvidia.com/gpu.shared: 1` for a fraction
(time-slicing with `renameByDefault: true`). The pod is pinned to the pool's GPU product
(and GPUs per node, when GPU Feature Discovery labels it) and tolerates the `nvidia.com/gpu`
taint. `backoffLimit: 0` because the broker, not the Job controller, decides on retries; a TTL
removes finished Jobs once the broker has long read their outcome.
A gang job (several nodes) is an Indexed Job with parallelism = completions = nodes, created
suspended for Kueue to admit as one unit. Reference:
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/
"""

from __future__ import annotations

from typing import Any

from broker.domain.fleet import GpuPool
from broker.domain.jobs import Job, Resources
from connectors.kubernetes import labels as L
from connectors.kubernetes.settings import KubernetesSettings

JsonDict = dict[str, Any]


def job_labels(job: Job, *, owner: str) -> dict[str, str]:
    return {
        L.JOB_ID_LABEL: L.label_value(job.id),
        L.TENANT_LABEL: L.label_value(job.tenant),
        L.TIER_LABEL: job.spec.tier.value,
        L.OWNER_LABEL: owner,
    }


def gpu_limits(resources: Resources) -> dict[str, str]:
    """The extended-resource limit for one job node's GPU ask."""
    if resources.mig_profile is not None:
        return {f"{L.MIG_RESOURCE_PREFIX}{resources.mig_profile}": "1"}
    if resources.gpu_fraction is not None:
        return {L.SHARED_GPU_RESOURCE: "1"}
    return {L.GPU_RESOURCE: str(resources.gpus)}


def _placement_constraints(pool: GpuPool) -> JsonDict:
    """nodeSelector on the pool's product (and GPU count); node affinity if it mixes products."""
    products = [p for p in pool.extra.get("product", "").split(",") if p]
    selector: dict[str, str] = {}
    if "gpu_count" in pool.extra:
        selector[L.COUNT_LABEL] = pool.extra["gpu_count"]
    constraints: JsonDict = {}
    if len(products) == 1:
        selector[L.PRODUCT_LABEL] = products[0]
    elif products:
        term = {"key": L.PRODUCT_LABEL, "operator": "In", "values": products}
        constraints["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    if selector:
        constraints["nodeSelector"] = selector
    return constraints


def build_job(*, job: Job, pool: GpuPool, name: str, settings: KubernetesSettings) -> JsonDict:
    """The Job manifest for `job` on `pool`."""
    res = job.spec.resources
    labels = job_labels(job, owner=settings.owner)
    annotations = {L.JOB_ID_ANNOTATION: job.id, L.POOL_ANNOTATION: pool.id}
    container: JsonDict = {
        "name": "main",
        "image": job.spec.workload.image,
        "env": [{"name": k, "value": v} for k, v in sorted(job.spec.workload.env.items())],
        "resources": {
            "requests": {
                "cpu": f"{round(res.cpu * 1000)}m",
                "memory": f"{round(res.memory_gb * 1024)}Mi",
            },
            "limits": gpu_limits(res),
        },
    }
    if job.spec.workload.command:
        container["command"] = list(job.spec.workload.command)
    pod_spec: JsonDict = {
        "restartPolicy": "Never",
        "containers": [container],
        "tolerations": [{"key": L.GPU_TAINT, "operator": "Exists"}],
        **_placement_constraints(pool),
    }
    priority_class = settings.priority_classes.get(job.spec.tier)
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    spec: JsonDict = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": pod_spec,
        },
    }
    if settings.finished_ttl_s is not None:
        spec["ttlSecondsAfterFinished"] = settings.finished_ttl_s
    if res.nodes > 1:
        spec.update(completionMode="Indexed", completions=res.nodes, parallelism=res.nodes)
    job_meta_labels = dict(labels)
    if settings.kueue_queue:
        job_meta_labels[L.KUEUE_QUEUE_LABEL] = settings.kueue_queue
        spec["suspend"] = True  # Kueue unsuspends the Job when it admits the workload
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": job_meta_labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def job_id_of(obj: JsonDict) -> str | None:
    """The broker job id a Job (or its pod) carries: the annotation, else the label."""
    meta = obj.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(L.JOB_ID_ANNOTATION)
    if annotated:
        return str(annotated)
    labelled = (meta.get("labels") or {}).get(L.JOB_ID_LABEL)
    return str(labelled) if labelled else None
