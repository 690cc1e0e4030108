"""Instances carry the providerID their Kubernetes node will show (`aws:///zone/id`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.aws.mapping import provider_id
from tests.connectors.aws.conftest import Built

pytestmark = pytest.mark.usefixtures("mocked")


def test_provider_id_shape() -> None:
    assert provider_id("us-east-1b", "i-0abc") == "aws:///us-east-1b/i-0abc"


async def test_provisioned_instances_carry_their_provider_id(aws: Callable[..., Built]) -> None:
    connector = aws(instance_types=["p5.48xlarge"]).connector
    (inst,) = await connector.provision(gpu_model="H100", count=1, spot=False, request_id="pid")
    assert inst.extra["provider_id"] == f"aws:///{inst.zone}/{inst.id}"
    assert [i.extra["provider_id"] for i in await connector.instances()] == [
        inst.extra["provider_id"]
    ]
