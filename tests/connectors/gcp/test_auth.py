"""Credentials, throttling and `check()`: the real service-account flow against the fake."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connectors.errors import AuthFailed, TransientError
from connectors.gcp.connector import GcpConnector
from tests.connectors.gcp.conftest import EMAIL, MakeConnector, Sleeps
from tests.connectors.gcp.fake_auth import ServiceAccountKey
from tests.connectors.gcp.fake_compute import FakeCompute


def _secrets(key: ServiceAccountKey, fake: FakeCompute) -> list[str]:
    # the key, the access tokens issued, and the self-signed JWTs (bearer credentials too)
    return [key.private_key_pem, *key.key_body_lines, *fake.auth.tokens, *fake.auth.bearers]


async def test_api_calls_are_signed_by_the_key_and_check_obtains_a_real_token(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    await connector.inventory()
    assert fake.auth.seen and set(fake.auth.seen) == {"jwt"}  # self-signed JWTs, verified
    assert fake.auth.grants == 0
    items = {i.name: i for i in await connector.check()}
    assert fake.auth.grants == 1  # the JWT-bearer grant at the key's token_uri
    assert items["credentials"].ok
    assert items["credentials"].detail == f"service account {EMAIL}: access token obtained"
    assert connector.credentials().startswith("service-account key file ")


async def test_revoked_credentials_fail_without_showing_key_or_token(
    connector: GcpConnector,
    fake: FakeCompute,
    key: ServiceAccountKey,
    caplog: pytest.LogCaptureFixture,
    sleeps: Sleeps,
) -> None:
    caplog.set_level(logging.DEBUG)
    await connector.check()  # a token was issued: it must not leak either
    fake.revoke()
    with pytest.raises(AuthFailed) as err:
        await connector.instances()
    assert "credentials rejected" in str(err.value) and "authError" in str(err.value)
    assert sleeps.delays == []  # an auth failure is not retried
    items = await connector.check()
    assert [(i.name, i.ok) for i in items] == [("credentials", False)]
    assert "invalid_grant" in items[0].detail
    shown = [str(err.value), repr(err.value), caplog.text, items[0].detail]
    leaked = [s for s in _secrets(key, fake) for text in shown if s in text]
    assert not leaked


async def test_an_unregistered_key_is_rejected(
    make_connector: MakeConnector, fake: FakeCompute, tmp_path: Path
) -> None:
    stranger = ServiceAccountKey.generate(email="intruder@evil.iam.gserviceaccount.com", slot=1)
    path = stranger.json_file(
        tmp_path / "stranger.json", token_uri=f"{fake.endpoint}/token", project=fake.project
    )
    c = make_connector(credentials_file=str(path))
    with pytest.raises(AuthFailed) as err:
        await c.inventory()
    assert stranger.private_key_pem not in str(err.value)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [(None, "cannot read credentials_file"), ("{not json", "no usable credentials")],
)
async def test_an_unusable_key_file_is_an_auth_failure(
    make_connector: MakeConnector, tmp_path: Path, content: str | None, complaint: str
) -> None:
    path = tmp_path / "broken.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    c = make_connector(credentials_file=str(path))
    with pytest.raises(AuthFailed, match=complaint):
        await c.inventory()


@pytest.mark.parametrize("status", [429, 403])
async def test_throttled_calls_are_retried_with_our_backoff(
    connector: GcpConnector, fake: FakeCompute, sleeps: Sleeps, status: int
) -> None:
    fake.throttle(3, status=status)
    inv = await connector.inventory()
    assert inv.pools
    assert len(sleeps.delays) == 3  # three throttled answers, three backoffs (zero-length here)
    assert fake.count("GET /compute/v1/projects/broker-test/regions/us-central1") == 4


async def test_unavailable_answers_are_retried_by_us_not_by_the_sdk(
    connector: GcpConnector, fake: FakeCompute, sleeps: Sleeps
) -> None:
    # aggregatedList has an SDK default retry on 503; ours replaces it, so every attempt
    # shows up as one of our (recorded) backoffs
    fake.unavailable(2)
    assert await connector.instances() == []
    assert len(sleeps.delays) == 2
    assert fake.count("GET /compute/v1/projects/broker-test/aggregated/instances") == 3


async def test_throttling_beyond_the_attempts_is_transient(
    connector: GcpConnector, fake: FakeCompute, sleeps: Sleeps
) -> None:
    fake.throttle(10)
    with pytest.raises(TransientError, match="rateLimitExceeded"):
        await connector.inventory()
    assert len(sleeps.delays) == 3  # four attempts in all: the SDK added none of its own
    assert fake.count("GET ") == 4


async def test_an_unreachable_endpoint_is_transient(
    make_connector: MakeConnector, fake: FakeCompute, sleeps: Sleeps
) -> None:
    c = make_connector()
    await fake.stop()
    with pytest.raises(TransientError):
        await c.instances()
    assert len(sleeps.delays) == 3


async def test_check_reports_each_item(connector: GcpConnector, fake: FakeCompute) -> None:
    items = {i.name: i for i in await connector.check()}
    assert list(items) == [
        "credentials",
        "project",
        "region",
        "gpu quota",
        "machine types",
        "insert instances",
    ]
    assert all(i.ok for i in items.values())
    assert items["project"].detail == "project broker-test is reachable"
    assert "us-central1-a, us-central1-b, us-central1-c" in items["region"].detail
    assert "NVIDIA_A100_GPUS 0/16" in items["gpu quota"].detail
    assert "NVIDIA_T4_GPUS 1/4" in items["gpu quota"].detail
    assert items["machine types"].detail.startswith("12 priced GPU machine types")
    assert items["insert instances"].detail.startswith("not checked")


async def test_check_fails_items_without_gpu_quota_or_a_reachable_region(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    for quota in fake.quotas:
        quota["usage"] = quota["limit"]
    items = {i.name: i for i in await connector.check()}
    assert not items["gpu quota"].ok
    fake.quotas = [{"metric": "CPUS", "limit": 24.0, "usage": 0.0}]
    fake.region_status = "DOWN"
    items = {i.name: i for i in await connector.check()}
    assert not items["gpu quota"].ok and "no NVIDIA GPU quota" in items["gpu quota"].detail
    assert not items["region"].ok
    fake.denied = True
    items = {i.name: i for i in await connector.check()}
    assert items["credentials"].ok  # the token endpoint still answers
    assert not items["project"].ok and "permission denied" in items["project"].detail


async def test_application_default_credentials(
    make_connector: MakeConnector,
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # ignore this machine's
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    c = make_connector(credentials_file=None)
    assert c.credentials() == "application default credentials"
    assert (await c.inventory()).pools
    items = {i.name: i for i in await c.check()}
    assert items["credentials"].detail == "application default credentials: access token obtained"


async def test_broken_application_default_credentials_are_an_auth_failure(
    make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "gone.json"))
    c = make_connector(credentials_file=None)
    with pytest.raises(AuthFailed, match="no usable credentials in application default"):
        await c.inventory()
