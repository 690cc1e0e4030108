"""Provision, rediscover and release instances against moto in-process (`mock_aws`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC

import pytest
from botocore.exceptions import ClientError

from connectors.aws.mapping import TAG_OWNER, TAG_REQUEST, TAG_SITE
from connectors.base import InstanceState
from connectors.errors import CapacityUnavailable, Conflict
from tests.connectors.aws.conftest import IMAGE_ID, SITE, USER_DATA, Built, owned_ids, raw_ec2

pytestmark = pytest.mark.usefixtures("mocked")

TYPES = ["p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5.4xlarge", "g5.xlarge", "g5.12xlarge"]


def tags_of(instance_id: str) -> dict[str, str]:
    found = raw_ec2().describe_instances(InstanceIds=[instance_id])
    raw = found["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


async def test_provision_on_demand(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=TYPES).connector
    got = await connector.provision(gpu_model="A100", count=2, spot=False, request_id="req-1")
    assert len(got) == 2 and len({i.id for i in got}) == 2
    for instance in got:
        assert instance.pool_id == f"{SITE}/p4d.24xlarge"
        assert (instance.gpu_model, instance.gpus, instance.spot) == ("A100", 8, False)
        assert instance.zone == "us-east-1a"  # first zone offering p4d, by name
        assert instance.state in (InstanceState.PENDING, InstanceState.RUNNING)
        assert instance.launched_at is not None and instance.launched_at.tzinfo is UTC
    ec2 = raw_ec2()
    raw = ec2.describe_instances(InstanceIds=[got[0].id])["Reservations"][0]["Instances"][0]
    assert raw["InstanceType"] == "p4d.24xlarge" and raw["ImageId"] == IMAGE_ID
    assert "InstanceLifecycle" not in raw
    tags = tags_of(got[0].id)
    assert tags[TAG_OWNER] == "gpu-broker" and tags[TAG_SITE] == SITE
    assert tags[TAG_REQUEST] == "req-1"
    user_data = ec2.describe_instance_attribute(InstanceId=got[0].id, Attribute="userData")
    assert base64.b64decode(user_data["UserData"]["Value"]).decode() == USER_DATA


async def test_provision_spot_picks_the_cheapest_spot_type(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=TYPES).connector
    got = await connector.provision(gpu_model="H100", count=1, spot=True, request_id="req-spot")
    # moto prices every type's spot at 0.00001/instance-hour: per GPU, the 8-GPU p5 is cheapest
    assert [(i.pool_id, i.spot, i.gpus) for i in got] == [(f"{SITE}/p5.48xlarge", True, 8)]
    raw = raw_ec2().describe_instances(InstanceIds=[got[0].id])["Reservations"][0]["Instances"][0]
    assert raw["InstanceLifecycle"] == "spot"
    on_demand = await connector.provision(gpu_model="H100", count=1, spot=False, request_id="od")
    # on demand, p5.4xlarge (6.88/h for 1 GPU) and p5.48xlarge (55.04/h for 8) tie per GPU:
    # fewer GPUs per instance wins the tie
    assert on_demand[0].pool_id == f"{SITE}/p5.4xlarge"


async def test_retry_with_the_same_request_returns_the_same_instances(
    aws: Callable[..., Built],
) -> None:
    connector = aws(instance_types=TYPES).connector
    first = await connector.provision(gpu_model="A10G", count=3, spot=False, request_id="req-2")
    again = await connector.provision(gpu_model="A10G", count=3, spot=False, request_id="req-2")
    assert sorted(i.id for i in again) == sorted(i.id for i in first)
    assert owned_ids(raw_ec2()) == {i.id for i in first}
    other = await connector.provision(gpu_model="A10G", count=1, spot=False, request_id="req-3")
    assert owned_ids(raw_ec2()) == {i.id for i in first + other}


async def test_instances_rediscovers_only_this_sites_instances(aws: Callable[..., Built]) -> None:
    mine = aws(instance_types=TYPES).connector
    neighbour = aws(site="aws-other", instance_types=TYPES).connector
    got = await mine.provision(gpu_model="A100-80GB", count=1, spot=False, request_id="r")
    await neighbour.provision(gpu_model="A100-80GB", count=1, spot=False, request_id="r")
    raw_ec2().run_instances(ImageId=IMAGE_ID, InstanceType="p4d.24xlarge", MinCount=1, MaxCount=1)
    # a restarted broker: a fresh connector finds its capacity by tags alone
    restarted = aws(instance_types=TYPES).connector
    found = await restarted.instances()
    assert [i.id for i in found] == [got[0].id]
    assert found[0].pool_id == f"{SITE}/p4de.24xlarge" and found[0].gpu_model == "A100-80GB"
    assert found[0].zone == "us-east-1b" and found[0].extra["request"] == "r"


async def test_release_terminates_and_tolerates_gone_ids(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=TYPES).connector
    got = await connector.provision(gpu_model="A10G", count=2, spot=False, request_id="x")
    ids = [i.id for i in got]
    await connector.release(instance_ids=[*ids, "i-0123456789abcdef0"])
    assert await connector.instances() == []
    assert owned_ids(raw_ec2(), states=("terminated",)) == set(ids)
    await connector.release(instance_ids=ids)  # again: already terminated is not an error
    await connector.release(instance_ids=[])


async def test_release_refuses_instances_it_did_not_launch(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=TYPES).connector
    mine = await connector.provision(gpu_model="A10G", count=1, spot=False, request_id="m")
    ec2 = raw_ec2()
    stranger = ec2.run_instances(ImageId=IMAGE_ID, InstanceType="g5.xlarge", MinCount=1, MaxCount=1)
    stranger_id = stranger["Instances"][0]["InstanceId"]
    lookalike = ec2.run_instances(
        ImageId=IMAGE_ID,
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": TAG_OWNER, "Value": "someone-else"}]}
        ],
    )["Instances"][0]["InstanceId"]
    for foreign in (stranger_id, lookalike):
        with pytest.raises(Conflict, match=foreign):
            await connector.release(instance_ids=[mine[0].id, foreign])
    # refused as a whole: nothing was terminated, not even the instance it owns
    alive = {
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        for i in r["Instances"]
    }
    assert {mine[0].id, stranger_id, lookalike} <= alive


async def test_launch_template(aws: Callable[..., Built]) -> None:
    ec2 = raw_ec2()
    data = base64.b64encode(b"#!/bin/sh\njoin\n").decode()
    ec2.create_launch_template(
        LaunchTemplateName="gpu-node", LaunchTemplateData={"ImageId": IMAGE_ID, "UserData": data}
    )
    connector = aws(instance_types=TYPES, launch_template={"name": "gpu-node"}).connector
    got = await connector.provision(gpu_model="A10G", count=1, spot=False, request_id="lt")
    raw = ec2.describe_instances(InstanceIds=[got[0].id])["Reservations"][0]["Instances"][0]
    assert raw["InstanceType"] == "g5.xlarge" and raw["ImageId"] == IMAGE_ID
    assert tags_of(got[0].id)["aws:ec2launchtemplate:version"] == "1"


async def test_subnet_per_zone(aws: Callable[..., Built]) -> None:
    ec2 = raw_ec2()
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.2.0/24", AvailabilityZone="us-east-1c")
    subnet_id = subnet["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="gpu", Description="gpu nodes", VpcId=vpc)["GroupId"]
    connector = aws(
        instance_types=TYPES, subnet_ids={"us-east-1c": subnet_id}, security_group_ids=[sg]
    ).connector
    got = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="net")
    raw = ec2.describe_instances(InstanceIds=[got[0].id])["Reservations"][0]["Instances"][0]
    assert got[0].zone == "us-east-1c" and raw["SubnetId"] == subnet_id
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [sg]


async def test_unknown_model_is_capacity_nowhere(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=TYPES).connector
    with pytest.raises(CapacityUnavailable, match="no on-demand offer of B200") as info:
        await connector.provision(gpu_model="B200", count=1, spot=False, request_id="b")
    assert info.value.tried == ()
    with pytest.raises(ValueError, match="at least 1"):
        await connector.provision(gpu_model="A100", count=0, spot=False, request_id="z")
    assert owned_ids(raw_ec2()) == set()


def test_moto_validates_instance_types() -> None:
    """The fixture's promise: moto refuses a type the region does not offer, as EC2 does."""
    with pytest.raises(ClientError, match="InvalidInstanceType"):
        raw_ec2(region="eu-north-1").run_instances(
            ImageId=IMAGE_ID, InstanceType="p4de.24xlarge", MinCount=1, MaxCount=1
        )
