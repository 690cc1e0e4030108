"""Pools list their nodes' `spec.providerID`s, aligned with the node names, when any has one."""

from __future__ import annotations

from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes


async def test_provider_ids_follow_the_node_order(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    burst = o.gpu_node("ip-10-0-1-7.ec2.internal")
    burst["spec"]["providerID"] = "aws:///us-east-1b/i-0abc"
    fake.add_node(burst)
    fake.add_node(o.gpu_node("gpu-a"))  # on-premises: no provider id
    pool = (await make_connector().inventory()).pools[0]
    assert pool.extra["nodes"] == "gpu-a,ip-10-0-1-7.ec2.internal"
    assert pool.extra["provider_ids"] == ",aws:///us-east-1b/i-0abc"


async def test_no_provider_ids_without_cloud_nodes(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    pool = (await make_connector().inventory()).pools[0]
    assert "provider_ids" not in pool.extra
