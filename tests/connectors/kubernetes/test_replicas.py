"""Service replicas: a Deployment per replica, a Service per service, readiness → RUNNING."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from broker.domain.enums import JobKind, JobState, Tier
from broker.domain.jobs import Endpoint, Job, Placement
from connectors.base import StatusUpdate
from connectors.errors import Conflict
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.labels import replica_name, service_name
from connectors.kubernetes.status import parse_time
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, next_update, placement_for
from tests.connectors.kubernetes.test_watch import eventually, wait_for_watch

NS = "/apis/apps/v1/namespaces/gpu-broker"
DEPLOYMENTS = f"{NS}/deployments"
SERVICES = "/api/v1/namespaces/gpu-broker/services"
SERVICE = "svc-4f1c2a"


def replica(job_id: str, *, service: str = SERVICE, generation: int = 1, **kw: Any) -> Job:
    """A replica job as the service controller makes it (`replica_spec`)."""
    job = make_job(job_id, **kw)
    spec = replace(
        job.spec,
        name=f"chat-g{generation}",
        kind=JobKind.INFERENCE,
        workload=replace(job.spec.workload, command=(), env={"PORT": "8000"}),
        service_id=service,
        generation=generation,
        endpoint=Endpoint(port=8000, readiness_path="/ready"),
    )
    return replace(job, spec=spec)


async def started(fake: FakeKubernetes, make_connector: MakeConnector) -> KubernetesConnector:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("gpu-b"))
    connector = make_connector(priority_classes={Tier.P1: "gpu-realtime"})
    await connector.start()
    return connector


async def placed(
    connector: KubernetesConnector, job: Job, *, node: str = "gpu-a", run: str = "run-1"
) -> Placement:
    (pool,) = (await connector.inventory()).pools
    return replace(placement_for(job, pool, nodes=(node,)), run=run)


async def dispatch(connector: KubernetesConnector, job: Job, **kw: Any) -> str:
    return await connector.dispatch(job=job, placement=await placed(connector, job, **kw))


async def rest(connector: KubernetesConnector, stream: AsyncIterator[StatusUpdate]) -> list[str]:
    """Close the connector and return what the stream still had, as "job:state" strings."""
    await connector.close()
    return [f"{u.job_id}:{u.state.value}" async for u in stream]


def deployment_watches(fake: FakeKubernetes) -> list[dict[str, str]]:
    return [r.query for r in fake.requests_to("GET", DEPLOYMENTS) if r.query.get("watch")]


def deployment_lists(fake: FakeKubernetes) -> int:
    return len(fake.requests_to("GET", DEPLOYMENTS)) - len(deployment_watches(fake))


# -- manifests -------------------------------------------------------------------------------


async def test_the_deployment_and_service_manifests(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    job = replica("job-r1", gpus=2, tier=Tier.P1)

    name = await dispatch(connector, job, node="gpu-b")

    assert name == replica_name("job-r1") == "gbr-job-r1"
    (body,) = [r.body for r in fake.requests_to("POST", DEPLOYMENTS)]
    meta, spec = body["metadata"], body["spec"]
    labels = {
        "gpu-broker/job-id": "job-r1",
        "gpu-broker/tenant": "vision",
        "gpu-broker/tier": "P1",
        "gpu-broker/owner": "gpu-broker",
        "gpu-broker/service": SERVICE,
        "gpu-broker/replica": "job-r1",
        "gpu-broker/generation": "1",
    }
    assert (body["apiVersion"], body["kind"]) == ("apps/v1", "Deployment")
    assert meta["labels"] == labels
    assert meta["annotations"] == {
        "gpu-broker/job-id": "job-r1",
        "gpu-broker/pool": "oslo/H100-8x",
        "gpu-broker/run": "run-1",
        "gpu-broker/service-id": SERVICE,
    }
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # never a surge pod outside the ledger
    assert spec["selector"] == {
        "matchLabels": {"gpu-broker/owner": "gpu-broker", "gpu-broker/replica": "job-r1"}
    }
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    pod = template["spec"]
    assert pod["restartPolicy"] == "Always"
    assert pod["priorityClassName"] == "gpu-realtime"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-b"]}]}
    ]
    (container,) = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "4000m", "memory": "32768Mi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/ready", "port": 8000},
        "periodSeconds": 5,
    }
    assert "command" not in container
    (svc,) = [r.body for r in fake.requests_to("POST", SERVICES)]
    assert svc["metadata"]["name"] == service_name(SERVICE) == f"gbs-{SERVICE}"
    assert svc["metadata"]["labels"] == {
        "gpu-broker/service": SERVICE,
        "gpu-broker/owner": "gpu-broker",
        "gpu-broker/tenant": "vision",
        "gpu-broker/tier": "P1",
    }
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": {"gpu-broker/service": SERVICE, "gpu-broker/owner": "gpu-broker"},
        "ports": [{"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}],
    }
    # The fake's controllers took it from there: one pod, bound where the broker placed it.
    (made,) = fake.deployment_pods(name)
    assert made["spec"]["nodeName"] == "gpu-b"
    assert made["metadata"]["name"].startswith(f"{name}-")
    assert made["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    assert fake.services[("gpu-broker", service_name(SERVICE))]["spec"]["clusterIP"]
    assert fake.jobs == {}  # a replica is no batch Job


def test_long_and_odd_service_ids_make_valid_names() -> None:
    name = service_name("SVC_" + "x" * 80)
    assert len(name) <= 63 and name[0].isalpha() and name[-1].isalnum()
    assert name != service_name("svc-" + "x" * 80)
    assert replica_name("job-a") != "gb-job-a"  # the external id tells the kinds apart


# -- dispatch, the Service, cancel -----------------------------------------------------------


async def test_replicas_share_one_service_which_goes_with_the_last(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    first = await dispatch(connector, replica("job-r1"))
    second = await dispatch(connector, replica("job-r2"), node="gpu-b")
    other = await dispatch(connector, replica("job-o1", service="svc-other"))

    assert set(fake.deployments) == {("gpu-broker", n) for n in (first, second, other)}
    assert set(fake.services) == {
        ("gpu-broker", service_name(SERVICE)),
        ("gpu-broker", service_name("svc-other")),
    }
    assert len(fake.requests_to("POST", SERVICES)) == 3  # the second met 409: it is there

    await connector.cancel(job_id="job-r1", external_id=first, reason="scaled_down")
    assert ("gpu-broker", service_name(SERVICE)) in fake.services  # job-r2 still serves
    await connector.cancel(job_id="job-r2", external_id=second, reason="scaled_down")

    assert set(fake.deployments) == {("gpu-broker", other)}
    assert set(fake.services) == {("gpu-broker", service_name("svc-other"))}
    assert fake.deployment_pods(first) == fake.deployment_pods(second) == []
    assert [p for p in fake.pods.values() if "job-r" in p["metadata"]["name"]] == []
    # Cancelling again (a lost response, a reconcile) is fine.
    await connector.cancel(job_id="job-r2", external_id=second, reason="scaled_down")


async def test_cancel_by_another_replica_reads_the_service_from_the_deployment(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    dispatcher = await started(fake, make_connector)
    name = await dispatch(dispatcher, replica("job-r1"))
    other = make_connector()  # a broker replica that never followed this job

    await other.cancel(job_id="job-r1", external_id=name, reason="drained")

    assert fake.deployments == {} and fake.services == {}


async def test_a_retried_dispatch_adopts_the_deployment(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    job = replica("job-r1")
    placement = await placed(connector, job)
    fake.lose_responses(1)  # the create lands, the answer is lost: the retry meets 409

    name = await connector.dispatch(job=job, placement=placement)
    again = await connector.dispatch(job=job, placement=placement)  # a retried dispatch

    assert name == again == replica_name("job-r1") and len(fake.deployments) == 1
    assert len(fake.requests_to("POST", DEPLOYMENTS)) == 3
    assert len(fake.services) == 1
    # A Deployment of that name made for another job is not adopted.
    foreign = fake.deployment(again)
    foreign["metadata"]["annotations"]["gpu-broker/job-id"] = "job-else"
    with pytest.raises(Conflict, match="another job"):
        await connector.dispatch(job=job, placement=placement)


# -- following -------------------------------------------------------------------------------


async def test_ready_is_running_once_and_held_readiness_is_not(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    await wait_for_watch(fake)
    fake.hold_readiness = True
    name = await dispatch(connector, replica("job-r1"))

    reader = asyncio.create_task(next_update(stream))
    await asyncio.sleep(0.3)
    assert not reader.done()  # scheduled and bound, but its pod is not ready: nothing yet
    assert fake.held() == [name]
    assert fake.deployment(name)["status"]["unavailableReplicas"] == 1

    fake.make_ready(name)
    update = await reader
    fake.make_ready(name)  # another MODIFIED, still ready: no second RUNNING

    assert (update.job_id, update.state, update.reason) == ("job-r1", JobState.RUNNING, "ready")
    assert update.run == "run-1"
    available = fake.deployment(name)["status"]["conditions"][0]
    assert available["type"] == "Available"
    assert update.at == parse_time(available["lastTransitionTime"])
    query = deployment_watches(fake)[0]
    assert query["labelSelector"] == "gpu-broker/owner=gpu-broker"
    assert query["allowWatchBookmarks"].lower() == "true"
    assert await rest(connector, stream) == []
    await eventually(lambda: fake.open_watches() == 0, "the server sees both watches end")


async def test_a_progress_deadline_fails_the_replica_with_its_pods_reason(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    fake.hold_readiness = True
    name = await dispatch(connector, replica("job-r1"))

    fake.time_out(name, waiting=("ImagePullBackOff", 'Back-off pulling image "ghcr.io/x:2"'))
    update = await next_update(stream)

    assert (update.state, update.reason) == (JobState.FAILED, "ProgressDeadlineExceeded")
    assert "has timed out progressing" in update.detail
    assert "container main waiting: ImagePullBackOff" in update.detail
    lookups = fake.requests_to("GET", "/api/v1/namespaces/gpu-broker/pods")
    assert "gpu-broker/replica=job-r1" in lookups[-1].query["labelSelector"]
    assert await rest(connector, stream) == []


async def test_a_deployment_deleted_outside_the_broker_fails_as_vanished(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch(connector, replica("job-r1"))
    assert (await next_update(stream)).state is JobState.RUNNING

    fake.delete_deployment_outside(name)
    update = await next_update(stream)

    assert (update.state, update.reason, update.run) == (JobState.FAILED, "vanished", "run-1")
    assert f"the Deployment {name} was deleted" in update.detail
    assert await rest(connector, stream) == []


async def test_a_cancelled_replica_reports_nothing_more(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch(connector, replica("job-r1"))
    assert (await next_update(stream)).state is JobState.RUNNING

    await connector.cancel(job_id="job-r1", external_id=name, reason="scaled_down")
    await asyncio.sleep(0.1)  # the DELETED event arrives

    assert await rest(connector, stream) == []


async def test_a_dropped_deployment_watch_resumes_and_misses_nothing(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    fake.hold_readiness = True
    a = await dispatch(connector, replica("job-a"))
    b = await dispatch(connector, replica("job-b"), node="gpu-b")
    fake.make_ready(a)
    assert (await next_update(stream)).job_id == "job-a"  # the watch got this far
    seen = fake.deployment(a)["metadata"]["resourceVersion"]

    fake.drop_watches()
    fake.make_ready(b)  # while the connector is disconnected

    update = await next_update(stream)
    assert (update.job_id, update.state) == ("job-b", JobState.RUNNING)
    assert deployment_watches(fake)[-1]["resourceVersion"] == seen
    assert deployment_lists(fake) == 1  # resumed without listing again
    assert await rest(connector, stream) == []


async def test_no_deployment_watch_without_a_reader(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    await dispatch(connector, replica("job-r1"))
    await asyncio.sleep(0.2)
    assert fake.open_watches() == 0 and deployment_watches(fake) == []


async def test_an_expired_deployment_watch_relists(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    fake.hold_readiness = True
    a = await dispatch(connector, replica("job-a"))
    b = await dispatch(connector, replica("job-b"), node="gpu-b")
    fake.make_ready(a)
    assert (await next_update(stream)).job_id == "job-a"
    await wait_for_watch(fake)

    fake.drop_watches()
    fake.expire_versions(kick=False)  # the version it would resume from is compacted
    fake.make_ready(b)
    update = await next_update(stream)

    assert (update.job_id, update.state) == ("job-b", JobState.RUNNING)
    await eventually(lambda: deployment_lists(fake) == 2, "a second list")
    await eventually(
        lambda: int(deployment_watches(fake)[-1]["resourceVersion"]) >= fake.oldest_version,
        "a watch from the new list's version",
    )
    assert await rest(connector, stream) == []  # job-a is not reported again


# -- owned, adopt, drift, check --------------------------------------------------------------


async def test_owned_lists_jobs_and_replicas(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    name = await dispatch(connector, replica("job-r1"))
    job = make_job("job-batch")
    batch = await connector.dispatch(job=job, placement=await placed(connector, job))

    assert await connector.owned() == {"job-r1": name, "job-batch": batch}


async def test_owned_still_lists_jobs_under_a_role_from_before_services(
    fake: FakeKubernetes, make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    connector = await started(fake, make_connector)
    job = make_job("job-batch")
    batch = await connector.dispatch(job=job, placement=await placed(connector, job))
    fake.forbid("list", "deployments.apps")

    assert await connector.owned() == {"job-batch": batch}
    assert "replicas not reconciled: oslo: forbidden" in caplog.text


async def test_adopt_after_a_restart(fake: FakeKubernetes, make_connector: MakeConnector) -> None:
    first = await started(fake, make_connector)
    live = replica("job-live")
    live_at = await placed(first, live)
    name = await first.dispatch(job=live, placement=live_at)
    del fake.services[("gpu-broker", service_name(SERVICE))]  # lost meanwhile
    await first.close()

    connector = make_connector()
    await connector.start()
    stream = connector.updates()
    gone = replica("job-gone")
    await connector.adopt(job=live, placement=replace(live_at, external_id=name))
    await connector.adopt(job=gone, placement=await placed(connector, gone))

    updates = {u.job_id: u for u in [await next_update(stream), await next_update(stream)]}
    assert (updates["job-live"].state, updates["job-live"].run) == (JobState.RUNNING, "run-1")
    assert (updates["job-gone"].state, updates["job-gone"].reason) == (JobState.FAILED, "vanished")
    assert "the Deployment gbr-job-gone no longer exists" in updates["job-gone"].detail
    assert ("gpu-broker", service_name(SERVICE)) in fake.services  # adopt put it back
    # Cancel after the restart finds its Deployment and Service through the follower.
    await connector.cancel(job_id="job-live", external_id=None, reason="drained")
    assert fake.deployments == {} and fake.services == {}
    assert await rest(connector, stream) == []


async def test_a_replica_pinned_to_a_gone_node_is_sent_back(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    job = replica("job-r1")
    placement = await placed(connector, job, node="gpu-b")
    del fake.nodes["gpu-b"]
    name = await connector.dispatch(job=job, placement=placement)
    (pod,) = fake.deployment_pods(name)
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]

    await connector.inventory()
    update = await next_update(stream)

    assert (update.job_id, update.state) == ("job-r1", JobState.PREEMPTED)
    assert update.reason == "node_gone: gpu-b"
    assert fake.deployments == {} and fake.services == {}
    assert await rest(connector, stream) == []


async def test_check_probes_deployments_and_services(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.forbid("delete", "services")
    connector = make_connector()

    items = {item.name: item for item in await connector.check()}

    for name in (
        "create deployments in gpu-broker",
        "watch deployments in gpu-broker",
        "delete deployments in gpu-broker",
        "create services in gpu-broker",
    ):
        assert items[name].ok, items[name]
    missing = items["delete services in gpu-broker"]
    assert not missing.ok and "delete services" in missing.detail
    reviews = fake.requests_to("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    asked = {
        (
            r.body["spec"]["resourceAttributes"]["verb"],
            r.body["spec"]["resourceAttributes"]["group"],
        )
        for r in reviews
        if r.body["spec"]["resourceAttributes"]["resource"] == "deployments"
    }
    assert asked == {("create", "apps"), ("watch", "apps"), ("delete", "apps")}
