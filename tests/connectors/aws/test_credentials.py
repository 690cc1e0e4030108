"""Credentials by reference: default chain, named profile, assumed role; and no secret leaks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from moto.sts.models import sts_backends

from broker.domain.errors import ConfigError
from connectors.aws.connector import AwsConnector
from connectors.errors import AuthFailed, CapacityUnavailable, ConnectorError
from tests.connectors.aws.conftest import (
    ACCESS_KEY,
    SECRET,
    Built,
    moto_post,
    owned_ids,
    raw_ec2,
)
from tests.connectors.aws.fakes import StubProxy

TYPES = ["p4d.24xlarge", "g5.xlarge"]
ROLE = "arn:aws:iam::111122223333:role/broker-burst"


def iam_user_keys() -> tuple[str, str]:
    """A moto IAM user's key pair: STS then reports that user as the caller."""
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="broker-ops")
    key = iam.create_access_key(UserName="broker-ops")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def write_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, key: str, secret: str
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[burst]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    )
    config = tmp_path / "config"
    config.write_text("[profile burst]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


@pytest.mark.usefixtures("mocked")
async def test_default_chain(aws: Callable[..., Built]) -> None:
    checked = {i.name: i for i in await aws(instance_types=TYPES).connector.check()}
    assert checked["credentials"].ok
    assert (
        checked["credentials"].detail == "account 123456789012, arn:aws:sts::123456789012:user/moto"
    )


@pytest.mark.usefixtures("mocked")
async def test_named_profile(
    aws: Callable[..., Built], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key, secret = iam_user_keys()
    write_profile(monkeypatch, tmp_path, key=key, secret=secret)
    checked = {
        i.name: i for i in await aws(profile="burst", instance_types=TYPES).connector.check()
    }
    assert checked["credentials"].ok
    assert checked["credentials"].detail.endswith("arn:aws:iam::123456789012:user/broker-ops")
    assert secret not in checked["credentials"].detail and key not in checked["credentials"].detail


@pytest.mark.usefixtures("mocked")
async def test_missing_profile(aws: Callable[..., Built]) -> None:
    connector = aws(profile="nowhere", instance_types=TYPES).connector
    with pytest.raises(AuthFailed, match="ProfileNotFound"):
        await connector.start()
    checked = await connector.check()
    assert [(i.name, i.ok) for i in checked] == [("credentials", False)]


async def test_no_credentials_anywhere(aws: Callable[..., Built]) -> None:
    # No keys in the environment, no files, no instance metadata: signing fails before any
    # request leaves (and the discard port would refuse one if it did).
    connector = aws(endpoint_url="http://127.0.0.1:9", instance_types=TYPES).connector
    with pytest.raises(AuthFailed, match="NoCredentialsError"):
        await connector.inventory()


@pytest.mark.usefixtures("mocked")
async def test_assumed_role_works_in_the_roles_account(aws: Callable[..., Built]) -> None:
    connector = aws(
        role_arn=ROLE, external_id="ext-7f3a", session_name="burst-1", instance_types=TYPES
    ).connector
    checked = {i.name: i for i in await connector.check()}
    assert checked["credentials"].detail == (
        "account 111122223333, arn:aws:sts::111122223333:assumed-role/broker-burst/burst-1"
    )
    assumed = sts_backends["111122223333"]["aws"].assumed_roles
    assert [(r.role_arn, r.external_id) for r in assumed] == [(ROLE, "ext-7f3a")]
    got = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="role")
    assert {i.id for i in await connector.instances()} == {got[0].id}
    assert owned_ids(raw_ec2()) == set()  # not in the base account: in the role's


async def test_moto_iam_enforcement_rejects_unknown_keys(
    aws: Callable[..., Built], moto_url: str
) -> None:
    """moto's own auth check (server mode), not the stub proxy: a key IAM does not know."""
    moto_post(moto_url, "/moto-api/reset-auth", b"0")
    try:
        connector = aws(endpoint_url=moto_url, instance_types=TYPES).connector
        with pytest.raises(AuthFailed, match="AuthFailure") as info:
            await connector.inventory()
        checked = await connector.check()
    finally:
        moto_post(moto_url, "/moto-api/reset-auth", b"inf")
    assert SECRET not in str(info.value) and ACCESS_KEY not in str(info.value)
    assert [(i.name, i.ok) for i in checked] == [("credentials", False)]
    assert "InvalidClientTokenId" in checked[0].detail


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def walk_failures(connector: AwsConnector, proxy: StubProxy) -> list[str]:
    """Throttling, a full zone, a denied call, then revoked credentials; the texts seen."""
    texts: list[str] = []
    proxy.throttle(2)
    await connector.inventory()
    with pytest.raises(CapacityUnavailable) as capacity:
        await connector.provision(gpu_model="A100", count=1, spot=False, request_id="s")
    texts.append(str(capacity.value))
    texts += [i.detail for i in await connector.check()]
    proxy.reject_credentials()
    for call in (connector.inventory(), connector.instances()):
        with pytest.raises(ConnectorError) as info:
            await call
        texts.append(str(info.value))
    texts += [i.detail for i in await connector.check()]
    return texts


def profile_with_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    write_profile(monkeypatch, tmp_path, key=ACCESS_KEY, secret=SECRET)


async def test_planted_secret_never_surfaces(
    aws: Callable[..., Built],
    proxy: StubProxy,
    all_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The secret sits in a profile file; every failure path is walked with every logger at
    DEBUG: botocore is heard, its wire dumps are filtered out, the secret shows up nowhere."""
    profile_with_secret(monkeypatch, tmp_path)
    proxy.fail("InsufficientInstanceCapacity", status=500, action="RunInstances")
    proxy.fail("UnauthorizedOperation", status=403, action="DescribeSpotPriceHistory")
    built = aws(endpoint_url=proxy.url, profile="burst", instance_types=TYPES)
    texts = await walk_failures(built.connector, proxy)
    assert any("AuthFailure" in t for t in texts) and len(built.sleeps) == 2
    logged = [r.getMessage() for r in all_logs.records]
    assert any(r.name.startswith("botocore.") for r in all_logs.records)  # botocore heard
    assert not any("Response body" in m for m in logged)  # its wire dumps are dropped
    assert not [t for t in texts + logged if SECRET in t]


async def test_secret_echoed_by_the_provider_is_cut_out(
    aws: Callable[..., Built],
    proxy: StubProxy,
    all_logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """AWS never echoes a secret; if a provider message ever did, the connector's errors,
    check() details and its own log lines would still not carry it (botocore's raw
    response dumps at DEBUG are filtered out in connectors/aws/session.py)."""
    profile_with_secret(monkeypatch, tmp_path)
    echo = f"request signed with {ACCESS_KEY}:{SECRET} was refused"
    proxy.fail("InsufficientInstanceCapacity", status=500, action="RunInstances", message=echo)
    proxy.fail("UnauthorizedOperation", status=403, action="DescribeSpotPriceHistory", message=echo)
    built = aws(endpoint_url=proxy.url, profile="burst", instance_types=TYPES)
    texts = await walk_failures(built.connector, proxy)
    texts += [r.getMessage() for r in all_logs.records if r.name.startswith("connectors")]
    assert any("was refused" in t for t in texts)  # the echo came through...
    assert not [t for t in texts if SECRET in t or ACCESS_KEY in t]  # ...cut


async def test_inline_secret_in_settings_is_refused_quietly(aws: Callable[..., Built]) -> None:
    with pytest.raises(ConfigError) as info:
        aws(aws_secret_access_key=SECRET)
    assert "aws_secret_access_key" in str(info.value) and SECRET not in str(info.value)


def test_credentials_are_described_by_reference(aws: Callable[..., Built]) -> None:
    assert aws().connector.credentials() == "the AWS default credential chain"
    assert aws(profile="burst").connector.credentials() == "AWS profile 'burst'"
    described = aws(role_arn=ROLE, external_id="ext-7f3a").connector.credentials()
    assert described == (
        f"role {ROLE} (session gpu-broker, with an external id) from the default chain"
    )
    assert "ext-7f3a" not in described
