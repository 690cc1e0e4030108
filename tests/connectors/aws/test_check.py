"""`check()`: each permission the broker needs, verified and reported without raising."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.connectors.aws.conftest import Built, raw_ec2, register_image
from tests.connectors.aws.fakes import StubProxy

TYPES = ["p4d.24xlarge", "g5.xlarge"]
NAMES = [
    "credentials",
    "price_catalog",
    "describe_instance_types",
    "spot_price_history",
    "run_instances",
]


@pytest.mark.usefixtures("mocked")
async def test_everything_allowed(aws: Callable[..., Built]) -> None:
    image = register_image(raw_ec2())
    checked = await aws(image_id=image, instance_types=TYPES).connector.check()
    assert [i.name for i in checked] == [*NAMES, "image"]
    assert all(i.ok for i in checked), checked
    by_name = {i.name: i for i in checked}
    assert by_name["price_catalog"].detail.startswith("43 instance types priced for us-east-1")
    assert by_name["describe_instance_types"].detail.startswith("2 priced GPU instance types")
    assert by_name["run_instances"].detail == "DryRun of g5.xlarge in us-east-1a allowed"
    assert by_name["image"].detail.startswith(f"{image} found; user data ")


@pytest.mark.usefixtures("mocked")
async def test_missing_image_and_user_data(aws: Callable[..., Built], tmp_path: Path) -> None:
    checked = {i.name: i for i in await aws(instance_types=TYPES).connector.check()}
    assert not checked["image"].ok and "not found" in checked["image"].detail
    image = register_image(raw_ec2())
    built = aws(image_id=image, user_data_file="gone.sh", instance_types=TYPES)
    checked = {i.name: i for i in await built.connector.check()}
    assert not checked["image"].ok and "cannot read user_data_file" in checked["image"].detail
    assert not checked["run_instances"].ok  # the launch it would try needs the user data


@pytest.mark.usefixtures("mocked")
async def test_launch_template_found_or_not(aws: Callable[..., Built]) -> None:
    ec2 = raw_ec2()
    data = {"ImageId": register_image(ec2), "UserData": base64.b64encode(b"join").decode()}
    ec2.create_launch_template(LaunchTemplateName="gpu-node", LaunchTemplateData=data)
    ec2.create_launch_template_version(LaunchTemplateName="gpu-node", LaunchTemplateData=data)
    built = aws(launch_template={"name": "gpu-node", "version": "$Latest"}, instance_types=TYPES)
    checked = {i.name: i for i in await built.connector.check()}
    assert checked["launch_template"].ok and checked["run_instances"].ok
    assert checked["launch_template"].detail == (
        "gpu-node found (default version 1, launching $Latest)"
    )
    for ref in ({"name": "gpu-nope"}, {"id": "lt-0123456789abcdef0"}):
        checked = {
            i.name: i
            for i in await aws(launch_template=ref, instance_types=TYPES).connector.check()
        }
        assert not checked["launch_template"].ok
        assert "not found" in checked["launch_template"].detail


@pytest.mark.usefixtures("mocked")
async def test_nothing_to_launch(aws: Callable[..., Built]) -> None:
    # p5e.48xlarge is offered in us-east-1 but has no price anywhere in the catalog
    checked = {i.name: i for i in await aws(instance_types=["p5e.48xlarge"]).connector.check()}
    assert checked["credentials"].ok
    assert not checked["describe_instance_types"].ok
    assert checked["describe_instance_types"].detail.startswith("0 priced")
    assert not checked["run_instances"].ok and checked["run_instances"].detail == (
        "no GPU type to try"
    )


async def test_launch_not_allowed(aws: Callable[..., Built], proxy: StubProxy) -> None:
    proxy.fail("UnauthorizedOperation", status=403, action="RunInstances", dry_run=None)
    checked = {
        i.name: i for i in await aws(endpoint_url=proxy.url, instance_types=TYPES).connector.check()
    }
    assert not checked["run_instances"].ok
    assert "UnauthorizedOperation" in checked["run_instances"].detail
    assert checked["credentials"].ok and checked["describe_instance_types"].ok
    assert [c.dry_run for c in proxy.calls("RunInstances")] == [True]


async def test_describe_not_allowed(aws: Callable[..., Built], proxy: StubProxy) -> None:
    proxy.fail("UnauthorizedOperation", status=403, action="DescribeInstanceTypes")
    checked = {
        i.name: i for i in await aws(endpoint_url=proxy.url, instance_types=TYPES).connector.check()
    }
    assert checked["credentials"].ok
    assert not checked["describe_instance_types"].ok
    assert "UnauthorizedOperation" in checked["describe_instance_types"].detail
    assert not checked["run_instances"].ok
