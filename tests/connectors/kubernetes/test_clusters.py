"""Several clusters in one process, each connector with its own ApiClient; the harness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.domain.enums import JobState
from connectors.errors import AuthFailed
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import KubernetesHarness, MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import make_job, new_token, next_update, placement_for


@pytest.fixture
async def second() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(token=new_token())
    await server.start()
    yield server
    await server.stop()


async def test_two_clusters_with_different_kubeconfigs(
    fake: FakeKubernetes, second: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("oslo-h100"))
    second.add_node(o.gpu_node("bergen-l4-a", product=o.L4, gpus=4, memory_mib=23034))
    second.add_node(o.gpu_node("bergen-l4-b", product=o.L4, gpus=4, memory_mib=23034))
    oslo = make_connector(site_name="oslo")
    bergen = make_connector(server=second, site_name="bergen")
    await oslo.start()
    await bergen.start()
    oslo_updates, bergen_updates = oslo.updates(), bergen.updates()

    oslo_inv, bergen_inv = await oslo.inventory(), await bergen.inventory()
    assert [p.id for p in oslo_inv.pools] == ["oslo/H100-8x"]
    assert [p.id for p in bergen_inv.pools] == ["bergen/L4-4x"]

    a, b = make_job("job-a"), make_job("job-b")
    name_a = await oslo.dispatch(job=a, placement=placement_for(a, oslo_inv.pools[0]))
    name_b = await bergen.dispatch(job=b, placement=placement_for(b, bergen_inv.pools[0]))
    assert list(fake.jobs) == [("gpu-broker", name_a)]
    assert list(second.jobs) == [("gpu-broker", name_b)]

    second.run_job(name_b)
    fake.run_job(name_a)
    fake.finish_job(name_a, succeeded=True)
    assert (await next_update(bergen_updates)).job_id == "job-b"
    assert [(await next_update(oslo_updates)).state for _ in range(2)] == [
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]

    # Revoking one cluster's credentials leaves the other working.
    second.reject_credentials()
    with pytest.raises(AuthFailed):
        await bergen.inventory()
    assert (await oslo.inventory()).pools


async def test_the_context_picks_the_cluster(
    fake: FakeKubernetes, second: FakeKubernetes, make_connector: MakeConnector, tmp_path: Path
) -> None:
    fake.add_node(o.gpu_node("first-node"))
    second.add_node(o.gpu_node("second-node"))
    path = tmp_path / "both.kubeconfig"
    write_kubeconfig(
        path,
        {"one": (fake.url, fake.token), "two": (second.url, second.token)},
        current="one",
    )

    default = await make_connector(kubeconfig=path).inventory()
    chosen = await make_connector(kubeconfig=path, context="two").inventory()

    assert default.pools[0].extra["nodes"] == "first-node"
    assert chosen.pools[0].extra["nodes"] == "second-node"


async def test_the_harness_drives_the_fake(harness: KubernetesHarness) -> None:
    connector = harness.connector
    stream = connector.updates()
    job = make_job()
    placement = await harness.placement(job)
    assert placement.pool_id == "oslo/H100-8x"

    name = await connector.dispatch(job=job, placement=placement)
    assert await harness.remote_ids() == {name}
    await harness.finish(name, succeeded=False)
    update = await next_update(stream)
    assert (update.job_id, update.state) == (job.id, JobState.FAILED)
    await connector.cancel(job_id=job.id, external_id=name, reason="done")
    assert await harness.remote_ids() == set()

    harness.throttle(2)
    assert (await connector.inventory()).pools
    harness.reject_credentials()
    with pytest.raises(AuthFailed) as err:
        await connector.inventory()
    assert harness.secret not in str(err.value)
