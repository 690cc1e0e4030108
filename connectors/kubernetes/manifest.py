"""The `batch/v1` Job the broker creates for a placed job, and the pod template it shares
with a service replica's Deployment (see `replicas`).

One container (`main`) runs the job's image, command and environment. The GPU ask is a
limit (extended resources need no request): `nvidia.com/gpu: N` for whole GPUs,
`nvidia.com/mig-<profile>: 1` for a MIG slice, `nvidia.com/gpu.shared: 1` for a fraction
(time-slicing with `renameByDefault: true`); the CPU and memory requests are the job's
per-node ask, rounded up as the broker's ledger rounds it. The pod is pinned to the pool's
GPU product (and GPUs per node, when GPU Feature Discovery labels it), tolerates the
`nvidia.com/gpu` taint, and may run only on the nodes the broker decided: a required node
affinity on the node's name (`matchFields` on `metadata.name`, the way DaemonSet pods are
pinned), so the scheduler binds it where the ledger counts it or leaves it Pending. A
placement without node names (an older row) is not pinned. On a pool in a declared node
pool (`node_pools`) the pod also gets the node pool's selector in `nodeSelector` and a
toleration per declared taint (and its extra tolerations), as Kueue adds a ResourceFlavor's
`nodeLabels` and `tolerations` to the pods it admits. `backoffLimit: 0` because the
broker, not the Job controller, decides on retries; a TTL removes finished Jobs once the
broker has long read their outcome.
A gang job (several nodes) is an Indexed Job with parallelism = completions = nodes, created
suspended for Kueue to admit as one unit. All its pods share one template, so each may go
on any of the decided nodes; a required pod anti-affinity on the job's label per hostname
keeps them one to a node, as the ledger has them. References:
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/
https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#node-affinity
https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/#how-daemon-pods-are-scheduled
"""

from __future__ import annotations

from typing import Any

from broker.domain.fleet import GpuPool
from broker.domain.jobs import Job, Placement, Resources
from connectors.kubernetes import labels as L
from connectors.kubernetes.node_pools import GPU_TOLERATION, NodePool
from connectors.kubernetes.settings import KubernetesSettings

JsonDict = dict[str, Any]
NODE_NAME_FIELD = "metadata.name"  # the node field `matchFields` may select on
HOSTNAME_LABEL = "kubernetes.io/hostname"


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


def _node_pool(pool: GpuPool, settings: KubernetesSettings) -> NodePool | None:
    """The declared node pool the pool's nodes are in; an error if the site no longer
    declares it (the pod would never tolerate the pool's taints)."""
    if pool.node_pool is None:
        return None
    declared = settings.node_pool(pool.node_pool.name)
    if declared is None:
        raise ValueError(f"pool {pool.id} is in node pool {pool.node_pool.name}, not declared")
    return declared


def _placement_constraints(
    pool: GpuPool, nodes: tuple[str, ...], node_pool: NodePool | None
) -> JsonDict:
    """nodeSelector on the pool's product (and GPU count) and its node pool's labels; a
    required node affinity on the decided node names, and on the products when the pool
    mixes them (one term: ANDed)."""
    products = [p for p in pool.extra.get("product", "").split(",") if p]
    selector: dict[str, str] = dict(node_pool.selector) if node_pool else {}
    if "gpu_count" in pool.extra:
        selector[L.COUNT_LABEL] = pool.extra["gpu_count"]
    term: JsonDict = {}
    if len(products) == 1:
        selector[L.PRODUCT_LABEL] = products[0]
    elif products:
        term["matchExpressions"] = [{"key": L.PRODUCT_LABEL, "operator": "In", "values": products}]
    if nodes:
        term["matchFields"] = [{"key": NODE_NAME_FIELD, "operator": "In", "values": list(nodes)}]
    constraints: JsonDict = {}
    if term:
        constraints["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    if selector:
        constraints["nodeSelector"] = selector
    return constraints


def _one_per_node(job: Job) -> JsonDict:
    """A gang's pods never share a node: each holds the share the ledger gave one node."""
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": {L.JOB_ID_LABEL: L.label_value(job.id)}},
                "topologyKey": HOSTNAME_LABEL,
            }
        ]
    }


def annotations_of(job: Job, *, pool: GpuPool, placement: Placement) -> dict[str, str]:
    annotations = {L.JOB_ID_ANNOTATION: job.id, L.POOL_ANNOTATION: pool.id}
    if placement.run:
        annotations[L.RUN_ANNOTATION] = placement.run
    return annotations


def pod_template(
    *,
    job: Job,
    pool: GpuPool,
    placement: Placement,
    settings: KubernetesSettings,
    labels: dict[str, str],
    annotations: dict[str, str],
    restart_policy: str,
) -> JsonDict:
    """The pod template of a Job or a replica's Deployment: the `main` container with the
    job's image, command, environment, GPU limits and CPU/memory requests; pinned to the
    placement's nodes (and node pool), tolerating the GPU taint (and the node pool's), with
    the tier's PriorityClass."""
    res = job.spec.resources
    demand = res.demand
    container: JsonDict = {
        "name": "main",
        "image": job.spec.workload.image,
        "env": [{"name": k, "value": v} for k, v in sorted(job.spec.workload.env.items())],
        "resources": {
            "requests": {
                "cpu": f"{demand.cpu_milli}m",
                "memory": f"{demand.memory_mb}Mi",
            },
            "limits": gpu_limits(res),
        },
    }
    if job.spec.workload.command:
        container["command"] = list(job.spec.workload.command)
    node_pool = _node_pool(pool, settings)
    tolerations = node_pool.pod_tolerations if node_pool else (GPU_TOLERATION,)
    pod_spec: JsonDict = {
        "restartPolicy": restart_policy,
        "containers": [container],
        "tolerations": [t.as_json() for t in tolerations],
        **_placement_constraints(pool, placement.node_names, node_pool),
    }
    priority_class = settings.priority_classes.get(job.spec.tier)
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    return {
        "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
        "spec": pod_spec,
    }


def build_job(
    *,
    job: Job,
    pool: GpuPool,
    placement: Placement,
    name: str,
    settings: KubernetesSettings,
) -> JsonDict:
    """The Job manifest for `job` on `pool`, its pods pinned to the placement's nodes."""
    res = job.spec.resources
    labels = job_labels(job, owner=settings.owner)
    annotations = annotations_of(job, pool=pool, placement=placement)
    template = pod_template(
        job=job,
        pool=pool,
        placement=placement,
        settings=settings,
        labels=labels,
        annotations=annotations,
        restart_policy="Never",
    )
    spec: JsonDict = {"backoffLimit": 0, "template": template}
    if settings.finished_ttl_s is not None:
        spec["ttlSecondsAfterFinished"] = settings.finished_ttl_s
    if res.nodes > 1:
        spec.update(completionMode="Indexed", completions=res.nodes, parallelism=res.nodes)
        affinity = template["spec"].setdefault("affinity", {})
        affinity["podAntiAffinity"] = _one_per_node(job)
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


def run_of(obj: JsonDict) -> str | None:
    """The broker run a Job was created for (None on Jobs made before runs were named)."""
    run = ((obj.get("metadata") or {}).get("annotations") or {}).get(L.RUN_ANNOTATION)
    return str(run) if run else None
