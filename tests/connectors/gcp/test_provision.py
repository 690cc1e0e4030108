"""Provisioning through the real REST clients: instance bodies, operations, zone failover,
quota, idempotent retries and the errors that reach the broker."""

from __future__ import annotations

import pytest

from connectors.base import InstanceState
from connectors.errors import (
    AuthFailed,
    CapacityUnavailable,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
)
from connectors.gcp.connector import GcpConnector
from tests.connectors.gcp.conftest import OWNED, SITE, MakeConnector, Sleeps
from tests.connectors.gcp.fake_compute import FakeCompute

ZONES = "/compute/v1/projects/broker-test/zones"


def inserts(fake: FakeCompute, zone: str) -> int:
    return fake.count(f"POST {ZONES}/{zone}/instances")


async def test_on_demand_a100_gets_an_a2_machine_with_labels_and_startup_script(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    [inst] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="req-1")
    [body] = fake.inserted
    assert body["machineType"] == "zones/us-central1-a/machineTypes/a2-highgpu-1g"
    assert "guestAccelerators" not in body  # the GPU comes with the A2 machine type
    assert body["scheduling"] == {"onHostMaintenance": "TERMINATE", "automaticRestart": True}
    assert body["labels"] == {
        "gpu-broker-owner": "gpu-broker",
        "gpu-broker-site": SITE,
        "gpu-broker-request": inst.extra["request"],
        "gpu-broker-pool": "a2-highgpu-1g",
        "gpu-broker-accelerator": "nvidia-tesla-a100",
        "gpu-broker-gpus": "1",
    }
    assert body["metadata"]["items"] == [
        {"key": "startup-script", "value": "#!/bin/sh\nkubeadm join 10.0.0.2:6443\n"}
    ]
    [disk] = body["disks"]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"] == {
        "sourceImage": "projects/debian-cloud/global/images/family/debian-12",
        "diskSizeGb": "200",
        "diskType": "zones/us-central1-a/diskTypes/pd-balanced",
    }
    assert body["networkInterfaces"] == [{"network": "global/networks/default"}]
    assert inst.id == body["name"] and inst.id.startswith("gb-req-1-")
    assert (inst.pool_id, inst.gpu_model, inst.gpus, inst.zone) == (
        f"{SITE}/a2-highgpu-1g",
        "A100",
        1,
        "us-central1-a",
    )
    assert (inst.spot, inst.state) == (False, InstanceState.RUNNING)
    assert inst.launched_at is not None and inst.launched_at.utcoffset() is not None


async def test_spot_t4_is_attached_to_an_n1_host_and_deleted_on_preemption(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    [inst] = await connector.provision(gpu_model="T4", count=1, spot=True, request_id="req-spot")
    [body] = fake.inserted
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n1-standard-8"
    assert body["guestAccelerators"] == [
        {
            "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
            "acceleratorCount": 1,
        }
    ]
    assert body["scheduling"] == {
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
    }
    assert (inst.spot, inst.gpu_model, inst.pool_id) == (
        True,
        "T4",
        f"{SITE}/n1-standard-8-nvidia-tesla-t4x1",
    )


async def test_l4_on_g2_and_settings_shape_the_instance(
    make_connector: MakeConnector, fake: FakeCompute
) -> None:
    fake.images.add("projects/my-images/global/images/family/gpu-node")
    c = make_connector(
        source_image="projects/my-images/global/images/family/gpu-node",
        subnetwork="regions/us-central1/subnetworks/gpu",
        external_ip=True,
        disk_gb=500,
        startup_script_file=None,
        owner="team-ml",
    )
    [inst] = await c.provision(gpu_model="L4", count=1, spot=False, request_id="req-l4")
    [body] = fake.inserted
    assert body["machineType"].endswith("/g2-standard-4")
    assert body["disks"][0]["initializeParams"]["diskSizeGb"] == "500"
    assert body["networkInterfaces"] == [
        {
            "network": "global/networks/default",
            "subnetwork": "regions/us-central1/subnetworks/gpu",
            "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
        }
    ]
    assert "metadata" not in body
    assert body["labels"]["gpu-broker-owner"] == "team-ml"
    assert inst.gpu_model == "L4"


async def test_operations_are_awaited_through_zone_operations_at_the_custom_endpoint(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.slow_polls = 4
    [inst] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="slow")
    waits = [c for c in fake.calls if c.startswith(f"POST {ZONES}/us-central1-a/operations/")]
    assert len(waits) == 6  # PENDING -> RUNNING, 4 more polls RUNNING, then DONE
    assert all(c.endswith("/wait") for c in waits)
    assert inst.state is InstanceState.RUNNING  # read after the operation was DONE


async def test_an_operation_that_outlasts_the_timeout_is_transient(
    make_connector: MakeConnector, fake: FakeCompute
) -> None:
    fake.slow_polls = 1000
    c = make_connector(operation_timeout_s=1e-6)
    with pytest.raises(TransientError, match="still PENDING"):
        await c.provision(gpu_model="A100", count=1, spot=False, request_id="stuck")


@pytest.mark.parametrize(
    "code", ["ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"]
)
async def test_a_stocked_out_zone_fails_over_to_the_next(
    connector: GcpConnector, fake: FakeCompute, code: str
) -> None:
    fake.exhaust("us-central1-a", code)
    [inst] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="fo")
    assert inst.zone == "us-central1-b"
    assert (inserts(fake, "us-central1-a"), inserts(fake, "us-central1-b")) == (1, 1)
    assert fake.live(OWNED) == {inst.id}


async def test_every_zone_failing_raises_capacity_unavailable_with_tried(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.exhaust("us-central1-a")
    fake.exhaust("us-central1-b", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS")
    fake.unsupported_zones.add("us-central1-c")
    with pytest.raises(CapacityUnavailable) as err:
        await connector.provision(gpu_model="A100", count=1, spot=False, request_id="none")
    assert err.value.tried == ("us-central1-a", "us-central1-b", "us-central1-c")
    assert "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS" in str(err.value)
    assert "UNSUPPORTED_OPERATION" in str(err.value)
    assert fake.live(OWNED) == set()


async def test_only_zones_offering_the_machine_type_are_tried(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.exhaust("us-central1-b")
    with pytest.raises(CapacityUnavailable) as err:
        await connector.provision(gpu_model="H100", count=1, spot=False, request_id="h100")
    assert err.value.tried == ("us-central1-b",)  # a3-highgpu-8g is listed in b only


async def test_exceeded_quota_names_the_quota_and_tries_every_zone(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.exceed_quota("NVIDIA_A100_GPUS")
    with pytest.raises(CapacityUnavailable) as err:
        await connector.provision(gpu_model="A100", count=1, spot=False, request_id="quota")
    assert err.value.tried == ("us-central1-a", "us-central1-b", "us-central1-c")
    message = str(err.value)
    assert "quota exceeded" in message and "QUOTA_EXCEEDED" in message
    assert "compute.googleapis.com/nvidia_a100_gpus" in message


async def test_no_offering_for_the_model_is_capacity_with_nothing_tried(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    with pytest.raises(CapacityUnavailable) as err:
        await connector.provision(gpu_model="B200", count=1, spot=False, request_id="b200")
    assert err.value.tried == ()
    assert fake.inserted == []


async def test_a_request_is_all_or_nothing(connector: GcpConnector, fake: FakeCompute) -> None:
    fake.capacity.update({"us-central1-a": 1, "us-central1-b": 1, "us-central1-c": 0})
    with pytest.raises(CapacityUnavailable) as err:
        await connector.provision(gpu_model="A100", count=3, spot=False, request_id="three")
    assert err.value.tried == ("us-central1-a", "us-central1-b", "us-central1-c")
    assert fake.count(f"DELETE {ZONES}/") == 2  # the two that started were deleted again
    assert fake.live(OWNED) == set()


async def test_retrying_a_request_returns_the_same_instances(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    fake.exhaust("us-central1-a")
    first = await connector.provision(gpu_model="A100", count=2, spot=False, request_id="again")
    assert {i.zone for i in first} == {"us-central1-b"}
    fake.stockout.clear()  # zone a has room now, but the request already has its instances
    sent = len(fake.inserted)
    second = await connector.provision(gpu_model="A100", count=2, spot=False, request_id="again")
    assert [i.id for i in second] == [i.id for i in first]
    assert len(fake.inserted) == sent
    more = await connector.provision(gpu_model="A100", count=3, spot=False, request_id="again")
    assert [i.id for i in more[:2]] == [i.id for i in first]
    assert len(fake.inserted) == sent + 1 and more[2].zone == "us-central1-a"


async def test_a_lost_insert_response_is_retried_with_the_same_request_id(
    connector: GcpConnector, fake: FakeCompute, sleeps: Sleeps
) -> None:
    fake.lost = 1  # the insert is applied, but its answer is a 503
    [inst] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="lost")
    assert inserts(fake, "us-central1-a") == 2 and len(sleeps.delays) == 1
    assert fake.live(OWNED) == {inst.id}  # the API dropped the repeated requestId
    assert fake.count(f"POST {ZONES}/us-central1-a/instances?requestId=") == 2


async def test_a_same_named_instance_of_someone_else_is_a_conflict(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    [mine] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="n")
    await connector.release(instance_ids=[mine.id])
    fake.add_instance("us-central1-a", mine.id, labels={"team": "other"})
    with pytest.raises(Conflict, match="not started by this request"):
        await connector.provision(gpu_model="A100", count=1, spot=False, request_id="n")


async def test_permission_denied_is_an_auth_failure(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    await connector.inventory()
    fake.denied = True
    with pytest.raises(AuthFailed, match="permission denied"):
        await connector.provision(gpu_model="A100", count=1, spot=False, request_id="denied")


async def test_a_bad_image_is_a_plain_connector_error_and_not_retried(
    make_connector: MakeConnector, fake: FakeCompute, sleeps: Sleeps
) -> None:
    c = make_connector(source_image="projects/nope/global/images/missing")
    with pytest.raises(ConnectorError) as err:
        await c.provision(gpu_model="A100", count=1, spot=False, request_id="img")
    assert type(err.value) is ConnectorError
    assert "sourceImage" in str(err.value)
    assert inserts(fake, "us-central1-a") == 1 and sleeps.delays == []


async def test_an_unknown_zone_is_not_found(make_connector: MakeConnector) -> None:
    c = make_connector(zones=["us-central1-z"])
    with pytest.raises(NotFound):
        await c.inventory()


async def test_a_missing_startup_script_is_reported(
    make_connector: MakeConnector, fake: FakeCompute
) -> None:
    c = make_connector(startup_script_file="missing.sh")
    with pytest.raises(ConnectorError, match="startup_script_file"):
        await c.provision(gpu_model="A100", count=1, spot=False, request_id="s")
    assert fake.inserted == []
