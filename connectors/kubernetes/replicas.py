"""A service replica on a Kubernetes site: one `apps/v1` Deployment per replica, and one
core/v1 Service per broker service on the site.

A replica is a broker job (`JobSpec.service_id` set), placed on nodes by the broker's
engine and counted in its GPU ledger like any job. It becomes a Deployment of exactly one
pod, named from the replica's job id (`gbr-<id>`), whose pod template is the Job's (see
`manifest.pod_template`: GPU limits, CPU/memory requests, pinned to the placement's nodes,
the GPU toleration, the tier's PriorityClass) with `restartPolicy: Always` (a Deployment
allows no other), the endpoint's port and a readiness probe on its path. A Deployment
rather than a Job because a replica serves until stopped: its container is restarted in
place when it crashes, and readiness (not a running container) is what makes it count.

The broker, not the Deployment, rolls a service to a new spec: it places replicas of the
new generation (their GPUs enter the ledger), waits for them to be ready and only then
cancels old ones, so ready capacity never drops. A Deployment's own rolling update would
surge a second GPU pod the ledger never placed, so a replica's Deployment never changes its
template (a new generation is a new replica, hence a new Deployment) and says
`strategy: Recreate`: should anyone edit its template, the old pod goes before the new one
comes, and the replica never holds more GPUs than its placement.

The Service (`gbs-<service id>`, ClusterIP) selects the pods of every replica of the
service on the site, of any generation, by the service label; only ready pods receive
traffic, so during a roll old and new replicas serve together. The connector creates it on
a replica's dispatch (409 AlreadyExists: it is there) and deletes it with the service's
last Deployment on the site (see `connector`).
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/
https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#recreate-deployment
https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/
"""

from __future__ import annotations

from typing import Any

from broker.domain.fleet import GpuPool
from broker.domain.jobs import Endpoint, Job, Placement
from connectors.kubernetes import labels as L
from connectors.kubernetes.manifest import annotations_of, job_labels, pod_template
from connectors.kubernetes.settings import KubernetesSettings

JsonDict = dict[str, Any]
PORT_NAME = "http"
PROBE_PERIOD_S = 5


def is_replica(job: Job) -> bool:
    return job.spec.service_id is not None


def replica_labels(job: Job, *, owner: str) -> dict[str, str]:
    """The job's labels, and which service, replica and generation the pod is."""
    assert job.spec.service_id is not None
    return {
        **job_labels(job, owner=owner),
        L.SERVICE_LABEL: L.label_value(job.spec.service_id),
        L.REPLICA_LABEL: L.label_value(job.id),
        L.GENERATION_LABEL: str(job.spec.generation),
    }


def service_selector(service_id: str, *, owner: str) -> dict[str, str]:
    """The labels of every pod of the service's replicas on the site."""
    return {L.SERVICE_LABEL: L.label_value(service_id), L.OWNER_LABEL: owner}


def _serve(container: JsonDict, endpoint: Endpoint) -> None:
    container["ports"] = [{"name": PORT_NAME, "containerPort": endpoint.port, "protocol": "TCP"}]
    container["readinessProbe"] = {
        "httpGet": {"path": endpoint.readiness_path, "port": endpoint.port},
        "periodSeconds": PROBE_PERIOD_S,
    }


def build_deployment(
    *,
    job: Job,
    pool: GpuPool,
    placement: Placement,
    name: str,
    settings: KubernetesSettings,
) -> JsonDict:
    """The Deployment of one replica: one pod, pinned where the broker placed it."""
    assert job.spec.service_id is not None
    labels = replica_labels(job, owner=settings.owner)
    annotations = annotations_of(job, pool=pool, placement=placement)
    annotations[L.SERVICE_ANNOTATION] = job.spec.service_id
    template = pod_template(
        job=job,
        pool=pool,
        placement=placement,
        settings=settings,
        labels=labels,
        annotations=annotations,
        restart_policy="Always",
    )
    if job.spec.endpoint is not None:
        _serve(template["spec"]["containers"][0], job.spec.endpoint)
    selector = {L.OWNER_LABEL: settings.owner, L.REPLICA_LABEL: labels[L.REPLICA_LABEL]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # The broker rolls by replicas; a template change must never surge a GPU pod.
            "strategy": {"type": "Recreate"},
            "template": template,
        },
    }


def build_service(*, job: Job, name: str, settings: KubernetesSettings) -> JsonDict | None:
    """The ClusterIP Service in front of the replica's service on the site (None when the
    replica has no endpoint to serve)."""
    service_id, endpoint = job.spec.service_id, job.spec.endpoint
    if service_id is None or endpoint is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {
                **service_selector(service_id, owner=settings.owner),
                L.TENANT_LABEL: L.label_value(job.tenant),
                L.TIER_LABEL: job.spec.tier.value,
            },
            "annotations": {L.SERVICE_ANNOTATION: service_id},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": service_selector(service_id, owner=settings.owner),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": endpoint.port,
                    "targetPort": endpoint.port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def service_of(obj: JsonDict) -> str | None:
    """The broker service a replica's Deployment (or its pod) belongs to."""
    meta = obj.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(L.SERVICE_ANNOTATION)
    if annotated:
        return str(annotated)
    labelled = (meta.get("labels") or {}).get(L.SERVICE_LABEL)
    return str(labelled) if labelled else None
