"""Loading settings: the demo config, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api.auth import TokenVerifier, hash_token
from broker.config import ConfigError, load_settings, normalise_database_url
from broker.domain.enums import Role, Tier
from broker.service import load_latency
from tests.conftest import DEMO_CONFIG


def test_demo_config_loads_with_five_sites_and_latencies() -> None:
    s = load_settings(DEMO_CONFIG, env={})
    assert [site.name for site in s.sites] == [
        "oslo-private",
        "sanjose-private",
        "aws-us-east-1",
        "gcp-europe-north1",
        "gcp-us-central1",
    ]
    assert s.sites[0].grid_zone == "NO"  # not YAML's false
    assert s.database_url == "sqlite+aiosqlite:///broker.db"
    matrix = load_latency(s)
    assert matrix.rtt("aws:us-east-1", "gcp:us-central1") is not None
    assert 0 < (matrix.rtt("aws:us-east-1", "aws:us-west-1") or 0) < 100


def test_environment_overrides_the_file() -> None:
    s = load_settings(
        DEMO_CONFIG, env={"BROKER_DATABASE_URL": "postgresql://u@h/db", "BROKER_HTTP_PORT": "9000"}
    )
    assert s.database_url == "postgresql://u@h/db"
    assert s.http.port == 9000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sites: [{name: a}]", "sites.0.kind"),
        ("http: {port: 99999}", "http.port"),
        ("bogus_key: 1", "bogus_key"),
        ("auth: {tokens: [{name: a, tenant: t, hash: plain-text-token}]}", "auth.tokens.0.hash"),
        ("[1, 2]", "mapping"),
        ("a: [", "not valid YAML"),
    ],
)
def test_invalid_config_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_settings(path, env={})


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(Path("/nonexistent/broker.yaml"), env={})


def test_token_hashes_verify_only_their_token() -> None:
    from broker.config import TokenSettings

    h = hash_token("s3cret-token-value-1")
    assert h.startswith("sha256$") and "s3cret" not in h
    assert hash_token("s3cret-token-value-1") != h  # salted
    v = TokenVerifier([TokenSettings(name="n", tenant="t", role=Role.OPERATOR, hash=h)])
    p = v.verify("s3cret-token-value-1")
    assert p is not None and p.tenant == "t" and p.role is Role.OPERATOR
    assert v.verify("s3cret-token-value-2") is None


def test_database_urls_get_async_drivers() -> None:
    assert normalise_database_url("postgresql://a@b/c") == "postgresql+asyncpg://a@b/c"
    assert normalise_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalise_database_url("postgresql+asyncpg://a@b/c") == "postgresql+asyncpg://a@b/c"


def test_example_config_loads_and_fills_missing_tier_weights(tmp_path: Path) -> None:
    s = load_settings(DEMO_CONFIG.parent / "example.yaml", env={})
    assert s.database_url.startswith("postgresql://")
    path = tmp_path / "c.yaml"
    path.write_text("scheduler: {weights: {P1: {cost: 1, latency: 0, carbon: 0}}}")
    w = load_settings(path, env={}).scheduler.weights
    assert set(w) == {Tier.P1, Tier.P2, Tier.P3}
    assert w[Tier.P1].latency == 0
