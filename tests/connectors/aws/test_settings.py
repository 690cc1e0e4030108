"""The `connector:` block of an AWS site: credentials by reference only, one launch source."""

from __future__ import annotations

from typing import Any

import pytest

from broker.domain.errors import ConfigError
from connectors.aws.settings import DEFAULT_PRICE_CATALOG, AwsSettings, parse_settings
from tests.connectors.aws.conftest import IMAGE_ID, SECRET, site_settings

LAUNCH = {"image_id": IMAGE_ID, "user_data_file": "join.sh"}


def parse(**raw: Any) -> AwsSettings:
    return parse_settings(raw, site=site_settings())


def test_defaults() -> None:
    s = parse(**LAUNCH)
    assert s.region is None and s.zones == () and s.instance_types == ()
    assert s.profile is None and s.role_arn is None and s.session_name == "gpu-broker"
    assert s.max_nodes == 16 and s.owner == "gpu-broker" and s.price_catalog is None
    assert DEFAULT_PRICE_CATALOG.is_file()


@pytest.mark.parametrize(
    "field", ["aws_access_key_id", "aws_secret_access_key", "aws_session_token", "session_token"]
)
def test_inline_credentials_are_refused_without_echoing_them(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**LAUNCH, **{field: SECRET})
    message = str(info.value)
    assert field in message and "profile" in message and "role_arn" in message
    assert SECRET not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert SECRET not in repr(info.value.args)


def test_unknown_fields_are_refused_by_name_only() -> None:
    with pytest.raises(ConfigError) as info:
        parse(**LAUNCH, secret_sauce=SECRET)
    assert "secret_sauce" in str(info.value) and SECRET not in str(info.value)


def test_profile_and_role_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="not both"):
        parse(**LAUNCH, profile="burst", role_arn="arn:aws:iam::111122223333:role/broker")


def test_external_id_needs_a_role() -> None:
    with pytest.raises(ConfigError, match="external_id"):
        parse(**LAUNCH, external_id="ext-1234")
    s = parse(**LAUNCH, role_arn="arn:aws:iam::111122223333:role/broker", external_id="ext-1234")
    assert s.external_id == "ext-1234"


def test_role_arn_must_be_a_role() -> None:
    with pytest.raises(ConfigError, match="role_arn"):
        parse(**LAUNCH, role_arn="arn:aws:iam::111122223333:user/someone")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({}, "exactly one of `launch_template` and `image_id`"),
        ({**LAUNCH, "launch_template": {"name": "gpu-node"}}, "exactly one"),
        ({"image_id": IMAGE_ID}, "needs `user_data_file`"),
        ({"launch_template": {"name": "gpu-node"}, "user_data_file": "x.sh"}, "goes with"),
        ({"launch_template": {}}, "exactly one of launch_template.name"),
        ({"launch_template": {"name": "gpu-node", "id": "lt-0123456789abcdef0"}}, "exactly one"),
        ({"launch_template": {"name": "gpu-node", "version": "newest"}}, "version"),
    ],
)
def test_one_launch_source(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse(**raw)


def test_launch_template_request() -> None:
    s = parse(launch_template={"id": "lt-0123456789abcdef0", "version": "3"})
    assert s.launch_template is not None
    assert s.launch_template.as_request() == {
        "LaunchTemplateId": "lt-0123456789abcdef0",
        "Version": "3",
    }
    named = parse(launch_template={"name": "gpu-node"}).launch_template
    assert named is not None
    assert named.as_request() == {"LaunchTemplateName": "gpu-node", "Version": "$Default"}


def test_zones_must_be_in_the_region_and_have_subnets() -> None:
    with pytest.raises(ConfigError, match="not in region us-east-1"):
        parse(**LAUNCH, zones=["us-west-2a"])
    with pytest.raises(ConfigError, match="without a subnet"):
        parse(**LAUNCH, zones=["us-east-1a", "us-east-1b"], subnet_ids={"us-east-1a": "subnet-0a1"})
    with pytest.raises(ConfigError, match="twice"):
        parse(**LAUNCH, zones=["us-east-1a", "us-east-1a"])
    ok = parse(**LAUNCH, zones=["us-east-1b"], subnet_ids={"us-east-1b": "subnet-0b1"})
    assert ok.subnet_ids == {"us-east-1b": "subnet-0b1"}


def test_region_override_checks_zones_against_it() -> None:
    s = parse_settings(
        {**LAUNCH, "region": "eu-north-1", "zones": ["eu-north-1b"]}, site=site_settings()
    )
    assert s.region == "eu-north-1"


@pytest.mark.parametrize(
    "raw",
    [
        {"max_nodes": 0},
        {"instance_types": ["p5"]},
        {"endpoint_url": "localhost:5000"},
        {"owner": ""},
        {"security_group_ids": ["default"]},
    ],
)
def test_field_shapes(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse(**LAUNCH, **raw)
