"""Drift: the broker's pods against their placements' nodes, checked on each inventory read."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from broker.domain.enums import JobState
from connectors.base import StatusUpdate
from connectors.kubernetes.connector import KubernetesConnector
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, next_update, placement_for

CONNECTOR_LOG = "connectors.kubernetes.connector"


async def started(fake: FakeKubernetes, make_connector: MakeConnector) -> KubernetesConnector:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("gpu-b"))
    connector = make_connector()
    await connector.start()
    return connector


async def dispatch_to(connector: KubernetesConnector, job_id: str, node: str) -> str:
    job = make_job(job_id)
    (pool,) = (await connector.inventory()).pools
    return await connector.dispatch(job=job, placement=placement_for(job, pool, nodes=(node,)))


async def rest(connector: KubernetesConnector, stream: AsyncIterator[StatusUpdate]) -> list[str]:
    """Close the connector and return what the stream still had, as "job:state" strings."""
    await connector.close()
    return [f"{u.job_id}:{u.state.value}" async for u in stream]


def drift_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "drift" in r.getMessage()]


async def test_a_pod_off_its_placements_nodes_is_logged_once(
    fake: FakeKubernetes, make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    first = await started(fake, make_connector)
    name = await dispatch_to(first, "job-a", "gpu-a")
    fake.run_job(name)
    (pod,) = fake.job_pods(name)
    await first.close()
    # After a restart the broker's record places the job on gpu-b (the Job it finds runs
    # on gpu-a, as a Job adopted by a retried dispatch would): the pod runs, so only a log.
    connector = make_connector()
    await connector.start()
    stream = connector.updates()
    (pool,) = (await connector.inventory()).pools
    job = make_job("job-a")
    placement = placement_for(job, pool, nodes=("gpu-b",), external_id=name)
    await connector.adopt(job=job, placement=placement)
    assert (await next_update(stream)).state is JobState.RUNNING

    with caplog.at_level(logging.WARNING, logger=CONNECTOR_LOG):
        await connector.inventory()
        await connector.inventory()  # still there: not logged again

    (message,) = drift_records(caplog)
    assert "job job-a" in message
    assert f"pod {pod['metadata']['name']}" in message
    assert "on node gpu-a" in message and "nodes gpu-b" in message
    assert await rest(connector, stream) == []  # nothing reported: it runs


async def test_pods_on_their_nodes_are_no_drift(
    fake: FakeKubernetes, make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch_to(connector, "job-a", "gpu-b")
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING

    with caplog.at_level(logging.WARNING, logger=CONNECTOR_LOG):
        await connector.inventory()

    assert drift_records(caplog) == []
    assert await rest(connector, stream) == []


def lose_node(fake: FakeKubernetes, node: str, how: str) -> None:
    if how == "gone":
        del fake.nodes[node]
    elif how == "cordoned":
        fake.nodes[node]["spec"]["unschedulable"] = True
    else:
        (ready,) = (c for c in fake.nodes[node]["status"]["conditions"] if c["type"] == "Ready")
        ready.update(status="Unknown", reason="NodeStatusUnknown")


@pytest.mark.parametrize("how", ["gone", "cordoned", "NotReady"])
async def test_a_pinned_pod_whose_node_is_gone_sends_its_job_back(
    fake: FakeKubernetes, make_connector: MakeConnector, how: str
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch_to(connector, "job-a", "gpu-b")
    lose_node(fake, "gpu-b", how)
    fake.run_job(name)  # the scheduler has nowhere to put the pod: it stays Pending
    (pod,) = fake.job_pods(name)
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    # The Job controller counts the pending pod as active.
    assert (await next_update(stream)).state is JobState.RUNNING

    await connector.inventory()
    update = await next_update(stream)
    await connector.inventory()  # once only

    assert (update.job_id, update.state) == ("job-a", JobState.PREEMPTED)
    assert update.reason == "node_gone: gpu-b"
    assert f"pod {pod['metadata']['name']}" in update.detail and f"gpu-b ({how})" in update.detail
    # Its Job is deleted, so dispatching the job again creates a new one instead of
    # adopting the stuck one; the deletion is not reported as a vanished job.
    assert fake.jobs == {}
    assert await rest(connector, stream) == []


async def test_a_pod_bound_to_a_node_deleted_before_it_started_sends_its_job_back(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch_to(connector, "job-a", "gpu-b")
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING
    (pod,) = fake.job_pods(name)
    pod["status"] = {"phase": "Pending"}  # bound, not yet started ...
    del fake.nodes["gpu-b"]  # ... when the node is deleted

    await connector.inventory()
    update = await next_update(stream)

    assert (update.state, update.reason) == (JobState.PREEMPTED, "node_gone: gpu-b")
    assert "gpu-b (gone)" in update.detail
    assert await rest(connector, stream) == []


async def test_a_pending_pod_whose_node_is_there_is_left_alone(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch_to(connector, "job-a", "gpu-b")
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING
    (pod,) = fake.job_pods(name)
    # Someone else's pod took the GPUs first: the node is fine, the pod waits for room.
    o.unschedulable(pod, message="0/2 nodes are available: 1 Insufficient nvidia.com/gpu")

    await connector.inventory()

    assert fake.jobs != {}
    assert await rest(connector, stream) == []


async def test_a_job_is_sent_back_only_once_its_job_is_deleted(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch_to(connector, "job-a", "gpu-b")
    del fake.nodes["gpu-b"]
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING
    fake.forbid("delete", "jobs.batch")

    await connector.inventory()  # cannot delete the Job: nothing reported yet
    fake.forbidden.clear()
    await connector.inventory()  # the next read tries again
    update = await next_update(stream)

    assert (update.state, update.reason) == (JobState.PREEMPTED, "node_gone: gpu-b")
    assert len(fake.requests_to("DELETE", f"/apis/batch/v1/namespaces/gpu-broker/jobs/{name}")) == 2
    assert await rest(connector, stream) == []
