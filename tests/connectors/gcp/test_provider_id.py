"""Instances carry the providerID their Kubernetes node will show (`gce://project/zone/name`)."""

from __future__ import annotations

from connectors.gcp.connector import GcpConnector
from connectors.gcp.mapping import provider_id
from tests.connectors.gcp.fake_compute import FakeCompute


def test_provider_id_from_the_zone_url() -> None:
    url = "https://www.googleapis.com/compute/v1/projects/p-1/zones/us-central1-b"
    assert provider_id(url, "gb-x-0") == "gce://p-1/us-central1-b/gb-x-0"
    assert provider_id("us-central1-b", "gb-x-0") == ""


async def test_provisioned_instances_carry_their_provider_id(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    got = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="pid")
    (inst,) = got
    assert inst.extra["provider_id"] == f"gce://{fake.project}/{inst.zone}/{inst.id}"
    assert [i.extra["provider_id"] for i in await connector.instances()] == [
        inst.extra["provider_id"]
    ]
