"""The state of a fake Kubernetes cluster and the controllers that change it.

Objects are stored as the API serves them (see `objects`); every write moves one
resourceVersion counter, and each change to a Job or a Deployment is kept in a history and
pushed to the open watches of its kind, so a watch can resume from any version not yet
compacted away. Hooks play the actors around the API server: the Job controller (`add_job`
defaults, `run_job`, `finish_job`), the Deployment and ReplicaSet controllers with the
kubelet's readiness probe (`add_deployment` makes the one pod and marks the Deployment
ready, at once or, under `hold_readiness`, when `make_ready` says; `time_out` plays a
progress deadline passing), Services (`add_service` defaults), the scheduler (a pod goes
on the first Ready, uncordoned node, by name, that its nodeSelector, required node
affinity and tolerations (of the node's NoSchedule/NoExecute taints) allow, a gang's pods
on distinct nodes when they carry a pod anti-affinity; with none, it stays Pending as
Unschedulable), other users (`add_pod`, `delete_job_outside`,
`delete_deployment_outside`), etcd compaction (`expire_versions`) and a flaky network
(`drop_watches`). `fake_api` serves it over HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.selectors import (
    Requirement,
    matches_labels,
    matches_node,
    tolerated,
)

JsonDict = dict[str, Any]
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
JOBS = "jobs"
DEPLOYMENTS = "deployments"
_KINDS = {JOBS: ("Job", "batch/v1"), DEPLOYMENTS: ("Deployment", "apps/v1")}
DROP = object()  # a watcher's cue to cut its connection
END = object()  # a watcher's cue to end its response normally


@dataclass(eq=False, slots=True)
class Watcher:
    """One open watch: which objects (Jobs or Deployments) it wants and the lines waiting to
    be sent."""

    namespace: str
    selector: list[Requirement]
    bookmarks: bool
    resource: str = JOBS
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class FakeCluster:
    """Nodes, pods, namespaces, Jobs, Deployments and Services, with the watch history."""

    def __init__(self, namespaces: tuple[str, ...]) -> None:
        self.nodes: dict[str, JsonDict] = {}
        self.pods: dict[tuple[str, str], JsonDict] = {}
        self.jobs: dict[tuple[str, str], JsonDict] = {}
        self.deployments: dict[tuple[str, str], JsonDict] = {}
        self.services: dict[tuple[str, str], JsonDict] = {}
        self.hold_readiness = False  # new Deployments' pods wait for `make_ready`
        self._replica_sets: dict[tuple[str, str], tuple[str, str]] = {}  # name, uid
        self._cluster_ips = 0
        self.namespaces = {
            ns: {"metadata": {"name": ns}, "status": {"phase": "Active"}} for ns in namespaces
        }
        self._rv = 100
        self._oldest_rv = 0
        self._events: list[tuple[int, str, str, JsonDict]] = []  # rv, resource, type, object
        self.watchers: set[Watcher] = set()

    def add_node(self, node: JsonDict) -> None:
        self._bump()
        self.nodes[node["metadata"]["name"]] = node

    def add_pod(self, pod: JsonDict) -> None:
        self._bump()
        meta = pod["metadata"]
        self.pods[(meta["namespace"], meta["name"])] = pod

    def job(self, name: str, namespace: str = "gpu-broker") -> JsonDict:
        return self.jobs[(namespace, name)]

    def job_pods(self, name: str, namespace: str = "gpu-broker") -> list[JsonDict]:
        return [
            p
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"]["labels"].get("job-name") == name
        ]

    def run_job(self, name: str, namespace: str = "gpu-broker") -> None:
        """The Job controller starts the Job's pods (Kueue would first unsuspend it)."""
        job = self.job(name, namespace)
        job["spec"]["suspend"] = False
        pods = self.job_pods(name, namespace)
        for index in range(len(pods), int(job["spec"].get("parallelism", 1))):
            self.add_pod(self._scheduled(job, index))
        count = len(self.job_pods(name, namespace))
        job["status"].update(active=count, ready=count, startTime=o.now())
        self._job_changed("MODIFIED", job)

    def finish_job(
        self,
        name: str,
        namespace: str = "gpu-broker",
        *,
        succeeded: bool = True,
        reason: str = "BackoffLimitExceeded",
        exit_code: int = 137,
        container_reason: str = "OOMKilled",
        waiting: tuple[str, str] | None = None,
    ) -> None:
        """The pods end and the Job controller sets the terminal conditions.

        A failure ends the pod with `container_reason`/`exit_code`, or leaves it waiting
        with `waiting` = (reason, message), as an ImagePullBackOff pod is.
        """
        job = self.job(name, namespace)
        if not self.job_pods(name, namespace):
            self.add_pod(self._scheduled(job, 0))
        pods = self.job_pods(name, namespace)
        for p in pods:
            if succeeded:
                o.terminate(p, exit_code=0, reason="Completed")
            elif waiting:
                o.waiting(p, reason=waiting[0], message=waiting[1])
            else:
                o.terminate(p, exit_code=exit_code, reason=container_reason)
            self._bump()
        status = job["status"]
        status.update(active=0, ready=0, terminating=0)
        if succeeded:
            status.update(succeeded=len(pods), completionTime=o.now())
        else:
            status["failed"] = len(pods)
        status["conditions"] = o.job_conditions(succeeded=succeeded, reason=reason)
        self._job_changed("MODIFIED", job)

    def delete_job_outside(self, name: str, namespace: str = "gpu-broker") -> None:
        """Someone else deletes the Job (kubectl delete)."""
        self.remove_job(namespace, name, propagation="Background")

    def touch(self, count: int = 1) -> None:
        """Unrelated writes elsewhere in the cluster move the resourceVersion on."""
        self._rv += count

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to watches that asked for them."""
        for watcher in self.watchers:
            if watcher.bookmarks:
                kind, api_version = _KINDS[watcher.resource]
                meta = {"resourceVersion": str(self._rv)}
                body = {"kind": kind, "apiVersion": api_version, "metadata": meta}
                watcher.queue.put_nowait(self.event_line("BOOKMARK", body))

    def expire_versions(self, *, kick: bool = True) -> None:
        """etcd compaction: every resourceVersion up to now is too old to watch from; live
        watches (with `kick`) end with an ERROR 410 event as the API server sends it."""
        self._rv += 1
        self._oldest_rv = self._rv
        if kick:
            for watcher in list(self.watchers):
                watcher.queue.put_nowait(self.expired_line("0"))
                watcher.queue.put_nowait(END)

    def drop_watches(self) -> None:
        """Cut every watch connection without a goodbye."""
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(DROP)

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @property
    def oldest_version(self) -> int:
        """The oldest resourceVersion a watch may start from (older ones get 410)."""
        return self._oldest_rv

    @property
    def watch_count(self) -> int:
        """Open Job watches (a connector opens its Deployment watch alongside)."""
        return self.open_watches(JOBS)

    def open_watches(self, resource: str | None = None) -> int:
        """Open watches of `resource` ("jobs", "deployments"), or of every kind."""
        return sum(1 for w in self.watchers if resource is None or w.resource == resource)

    # -- the API server's own part of a create ---------------------------------------

    def add_job(self, manifest: JsonDict, ns: str = "gpu-broker") -> tuple[JsonDict, int]:
        """Create a Job as the API server does (defaults, selector, controller labels);
        returns the answer body and status code."""
        job = copy.deepcopy(manifest)
        name = str((job.get("metadata") or {}).get("name", ""))
        if ns not in self.namespaces:
            return o.status(
                404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"
            ), 404
        restart = (
            ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("restartPolicy")
        )
        if not _DNS_LABEL.match(name) or restart not in ("Never", "OnFailure"):
            return o.status(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid',
                name=name,
                group="batch",
                kind="Job",
            ), 422
        if (ns, name) in self.jobs:
            return o.status(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                name=name,
                group="batch",
                kind="jobs",
            ), 409
        uid = o.new_uid()
        meta = job["metadata"]
        meta.update(namespace=ns, uid=uid, generation=1, creationTimestamp=o.now())
        spec = job["spec"]
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        controller = {"batch.kubernetes.io/controller-uid": uid}
        spec["selector"] = {"matchLabels": dict(controller)}
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(
            {
                **controller,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            }
        )
        job["status"] = {}
        job.update(kind="Job", apiVersion="batch/v1")
        self.jobs[(ns, name)] = job
        self._job_changed("ADDED", job)
        return copy.deepcopy(job), 201

    # -- watch plumbing ------------------------------------------------------------------

    def history_since(self, version: int, watcher: Watcher) -> list[bytes]:
        """The watch lines of the changes after `version` that `watcher` wants."""
        return [
            self.event_line(kind, obj)
            for rv, resource, kind, obj in self._events
            if rv > version and self.wants(watcher, resource, obj)
        ]

    def wants(self, watcher: Watcher, resource: str, obj: JsonDict) -> bool:
        return (
            resource == watcher.resource
            and obj["metadata"]["namespace"] == watcher.namespace
            and matches_labels(obj, watcher.selector)
        )

    def event_line(self, kind: str, obj: JsonDict) -> bytes:
        return (json.dumps({"type": kind, "object": obj}) + "\n").encode()

    def expired_line(self, since: str) -> bytes:
        message = f"too old resource version: {since} ({self._oldest_rv})"
        return self.event_line("ERROR", o.status(410, "Expired", message))

    # -- state -----------------------------------------------------------------------------

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _job_changed(self, kind: str, job: JsonDict) -> None:
        self._changed(JOBS, kind, job)

    def _changed(self, resource: str, kind: str, obj: JsonDict) -> None:
        obj["metadata"]["resourceVersion"] = self._bump()
        snapshot = copy.deepcopy(obj)
        self._events.append((self._rv, resource, kind, snapshot))
        line = self.event_line(kind, snapshot)
        for watcher in self.watchers:
            if self.wants(watcher, resource, snapshot):
                watcher.queue.put_nowait(line)

    def remove_job(self, ns: str, name: str, *, propagation: str) -> None:
        job = self.jobs.pop((ns, name))
        self._job_changed("DELETED", job)
        for p in self.job_pods(name, ns):
            if propagation in ("Background", "Foreground"):
                del self.pods[(ns, p["metadata"]["name"])]
            else:
                p["metadata"].pop("ownerReferences", None)

    # -- Deployments and Services ------------------------------------------------------

    def deployment(self, name: str, namespace: str = "gpu-broker") -> JsonDict:
        return self.deployments[(namespace, name)]

    def deployment_pods(self, name: str, namespace: str = "gpu-broker") -> list[JsonDict]:
        replica_set = self._replica_sets.get((namespace, name), ("", ""))[0]
        return [
            p
            for (ns, _), p in self.pods.items()
            if ns == namespace
            and any(r.get("name") == replica_set for r in p["metadata"].get("ownerReferences", []))
        ]

    def add_deployment(self, manifest: JsonDict, ns: str = "gpu-broker") -> tuple[JsonDict, int]:
        """Create a Deployment as the API server does (defaults, validation); then the
        Deployment and ReplicaSet controllers make its pod and report its progress."""
        deploy = copy.deepcopy(manifest)
        name = str((deploy.get("metadata") or {}).get("name", ""))
        if ns not in self.namespaces:
            return o.status(
                404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"
            ), 404
        spec = deploy.get("spec") or {}
        template = spec.get("template") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        restart = (template.get("spec") or {}).get("restartPolicy", "Always")
        matched = bool(selector) and all(labels.get(k) == v for k, v in selector.items())
        if not _DNS_LABEL.match(name) or restart != "Always" or not matched:
            return o.status(
                422,
                "Invalid",
                f'Deployment.apps "{name}" is invalid',
                name=name,
                group="apps",
                kind="Deployment",
            ), 422
        if (ns, name) in self.deployments:
            return o.status(
                409,
                "AlreadyExists",
                f'deployments.apps "{name}" already exists',
                name=name,
                group="apps",
                kind="deployments",
            ), 409
        meta = deploy["metadata"]
        meta.update(namespace=ns, uid=o.new_uid(), generation=1, creationTimestamp=o.now())
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        deploy["status"] = {}
        deploy.update(kind="Deployment", apiVersion="apps/v1")
        self.deployments[(ns, name)] = deploy
        self._changed(DEPLOYMENTS, "ADDED", deploy)
        answer = copy.deepcopy(deploy)
        self._roll_out(deploy)
        return answer, 201

    def _roll_out(self, deploy: JsonDict) -> None:
        """The controllers' part: a ReplicaSet, its one pod (bound by the scheduler), the
        Deployment progressing; ready at once unless readiness is held."""
        meta = deploy["metadata"]
        key = (meta["namespace"], meta["name"])
        replica_set = f"{meta['name']}-{o.template_hash(deploy['spec']['template'])}"
        self._replica_sets[key] = (replica_set, o.new_uid())
        meta.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        node = self._node_for(deploy)
        pod = o.deployment_pod(
            deploy,
            replica_set=replica_set,
            replica_set_uid=self._replica_sets[key][1],
            node=node,
            ready=False,
        )
        if node is None:
            o.unschedulable(pod, message=f"0/{len(self.nodes)} nodes are available")
        self.add_pod(pod)
        self._set_status(deploy, o.deployment_status(deploy, replica_set=replica_set, ready=False))
        if node is not None and not self.hold_readiness:
            self.make_ready(meta["name"], meta["namespace"])

    def held(self, namespace: str = "gpu-broker") -> list[str]:
        """The Deployments whose pod is bound but not ready yet."""
        return [
            name
            for (ns, name), d in sorted(self.deployments.items())
            if ns == namespace
            and not (d.get("status") or {}).get("readyReplicas")
            and any(p["spec"].get("nodeName") for p in self.deployment_pods(name, ns))
        ]

    def make_ready(self, name: str, namespace: str = "gpu-broker") -> None:
        """The pod's readiness probe passes: the Deployment becomes available."""
        deploy = self.deployment(name, namespace)
        for pod in self.deployment_pods(name, namespace):
            o.set_pod_ready(pod, ready=True)
            self._bump()
        replica_set = self._replica_sets[(namespace, name)][0]
        self._set_status(deploy, o.deployment_status(deploy, replica_set=replica_set, ready=True))

    def time_out(
        self,
        name: str,
        namespace: str = "gpu-broker",
        *,
        waiting: tuple[str, str] = ("ImagePullBackOff", "Back-off pulling image"),
    ) -> None:
        """The pod never became ready (its container waits with `waiting`) and the
        Deployment passed its progress deadline."""
        deploy = self.deployment(name, namespace)
        for pod in self.deployment_pods(name, namespace):
            o.waiting(pod, reason=waiting[0], message=waiting[1])
            self._bump()
        replica_set = self._replica_sets[(namespace, name)][0]
        status = o.deployment_status(deploy, replica_set=replica_set, ready=False, timed_out=True)
        self._set_status(deploy, status)

    def _set_status(self, deploy: JsonDict, status: JsonDict) -> None:
        """The controller's status update: a condition whose status did not change keeps
        its lastTransitionTime, as the real controller's does."""
        before = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}
        for cond in status.get("conditions") or []:
            old = before.get(cond["type"])
            if old is not None and old["status"] == cond["status"]:
                cond["lastTransitionTime"] = old["lastTransitionTime"]
        deploy["status"] = status
        self._changed(DEPLOYMENTS, "MODIFIED", deploy)

    def delete_deployment_outside(self, name: str, namespace: str = "gpu-broker") -> None:
        """Someone else deletes the Deployment (kubectl delete)."""
        self.remove_deployment(namespace, name, propagation="Background")

    def remove_deployment(self, ns: str, name: str, *, propagation: str) -> None:
        pods = self.deployment_pods(name, ns)
        deploy = self.deployments.pop((ns, name))
        self._replica_sets.pop((ns, name), None)
        self._changed(DEPLOYMENTS, "DELETED", deploy)
        for p in pods:
            if propagation in ("Background", "Foreground"):
                del self.pods[(ns, p["metadata"]["name"])]
            else:
                p["metadata"].pop("ownerReferences", None)

    def add_service(self, manifest: JsonDict, ns: str = "gpu-broker") -> tuple[JsonDict, int]:
        """Create a Service as the API server does (a cluster IP, the defaults)."""
        service = copy.deepcopy(manifest)
        name = str((service.get("metadata") or {}).get("name", ""))
        if not _DNS_1035.match(name):
            return o.status(
                422, "Invalid", f'Service "{name}" is invalid', name=name, kind="Service"
            ), 422
        if (ns, name) in self.services:
            return o.status(
                409,
                "AlreadyExists",
                f'services "{name}" already exists',
                name=name,
                kind="services",
            ), 409
        self._cluster_ips += 1
        meta = service["metadata"]
        meta.update(
            namespace=ns, uid=o.new_uid(), creationTimestamp=o.now(), resourceVersion=self._bump()
        )
        ip = f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 1}"
        o.service_defaults(service, cluster_ip=ip)
        service.update(kind="Service", apiVersion="v1")
        self.services[(ns, name)] = service
        return copy.deepcopy(service), 201

    def remove_service(self, ns: str, name: str) -> JsonDict:
        self._bump()
        return self.services.pop((ns, name))

    def _scheduled(self, job: JsonDict, index: int) -> JsonDict:
        """A pod of the Job, bound by the scheduler, or Pending when no node takes it."""
        node = self._node_for(job)
        pod = o.job_pod(job, index=index, node=node)
        if node is None:
            o.unschedulable(pod, message=f"0/{len(self.nodes)} nodes are available")
        return pod

    def _node_for(self, job: JsonDict) -> str | None:
        """A node for a pod of the Job's (or Deployment's) template."""
        spec = job["spec"]["template"]["spec"]
        wanted = spec.get("nodeSelector") or {}
        affinity = spec.get("affinity") or {}
        meta = job["metadata"]
        required = (affinity.get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        # A gang's anti-affinity: not on a node that holds a pod of the same Job already.
        taken = (
            {p["spec"].get("nodeName") for p in self.job_pods(meta["name"], meta["namespace"])}
            if "podAntiAffinity" in affinity
            else set()
        )
        for name, node in sorted(self.nodes.items()):
            labels = node["metadata"].get("labels") or {}
            if not all(labels.get(k) == v for k, v in wanted.items()):
                continue
            if required is not None and not matches_node(node, required["nodeSelectorTerms"]):
                continue
            if not tolerated(node, spec.get("tolerations") or []):
                continue
            if o.schedulable(node) and name not in taken:
                return name
        return None
