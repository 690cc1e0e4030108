"""The `connector:` settings of a Kubernetes site: credentials by reference only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.domain.clock import ManualClock
from broker.domain.enums import SiteKind, Tier
from broker.domain.errors import ConfigError
from connectors.base import Ability, BuildContext
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.settings import parse
from connectors.settings import SiteSettings
from connectors.threads import Blocking
from tests.connectors.kubernetes.helpers import START

SECRET = "eyJhbGciOiJSUzI1NiIsImtpZCI6InNlY3JldCJ9.c2VjcmV0"


def site_settings(connector: dict[str, Any]) -> SiteSettings:
    return SiteSettings(
        name="oslo",
        kind=SiteKind.KUBERNETES,
        region="oslo",
        grid_zone="NO",
        private=True,
        connector=connector,
    )


def test_kubeconfig_path_is_resolved_against_the_config_dir(tmp_path: Path) -> None:
    parsed = parse(
        site_settings(
            {
                "kubeconfig": "secrets/oslo.kubeconfig",
                "context": "broker@oslo",
                "namespace": "gpu-jobs",
                "priority_classes": {"P1": "gpu-realtime", "P3": "gpu-scavenger"},
                "kueue_queue": "broker",
                "price_per_gpu_hour": {"H100": 2.1},
                "owner": "broker-eu",
            }
        ),
        config_dir=tmp_path,
    )
    assert parsed.kubeconfig == tmp_path / "secrets" / "oslo.kubeconfig"
    assert parsed.context == "broker@oslo"
    assert parsed.namespace == "gpu-jobs"
    assert parsed.priority_classes == {Tier.P1: "gpu-realtime", Tier.P3: "gpu-scavenger"}
    assert parsed.kueue_queue == "broker"
    assert parsed.price_per_gpu_hour == {"H100": 2.1}
    assert parsed.owner == "broker-eu"
    assert not parsed.in_cluster


def test_defaults_and_in_cluster(tmp_path: Path) -> None:
    with Blocking(1) as pool:
        context = BuildContext(config_dir=tmp_path, blocking=pool, clock=ManualClock(START))
        connector = KubernetesConnector.from_settings(
            site=site_settings({"in_cluster": True}), context=context
        )
    assert connector.credentials() == "the in-cluster service account"
    parsed = parse(site_settings({"in_cluster": True}), config_dir=tmp_path)
    assert parsed.in_cluster and parsed.kubeconfig is None
    assert parsed.namespace == "gpu-broker"
    assert parsed.owner == "gpu-broker"
    assert parsed.priority_classes == {} and parsed.kueue_queue is None


@pytest.mark.parametrize(
    ("connector", "complaint"),
    [
        ({}, "exactly one of kubeconfig"),
        ({"kubeconfig": "a", "in_cluster": True}, "exactly one of kubeconfig"),
        ({"in_cluster": True, "context": "x"}, "context applies to a kubeconfig"),
        ({"kubeconfig": "a", "namespace": "Not_A_Namespace"}, "namespace"),
        ({"kubeconfig": "a", "priority_classes": {"P9": "x"}}, "priority_classes"),
        ({"kubeconfig": "a", "price_per_gpu_hour": {"H100": -1}}, "price_per_gpu_hour"),
        ({"kubeconfig": "a", "owner": "not a label value"}, "owner"),
        ({"kubeconfig": "a", "server": "https://x"}, "server"),
    ],
)
def test_invalid_settings_are_refused(connector: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match="invalid Kubernetes connector settings") as err:
        parse(site_settings(connector), config_dir=Path("."))
    assert complaint in str(err.value)


@pytest.mark.parametrize(
    "field", ["token", "bearer_token", "password", "client-key-data", "client_key", "api_key"]
)
def test_inline_secrets_are_refused_without_echoing_them(field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(site_settings({"kubeconfig": "a", field: SECRET}), config_dir=Path("."))
    message = str(err.value)
    assert "inline credentials" in message and field in message
    assert "by reference" in message
    assert SECRET not in message


def test_kubeconfig_content_pasted_as_the_path_is_refused() -> None:
    content = f"apiVersion: v1\nkind: Config\nusers:\n- user:\n    token: {SECRET}\n"
    with pytest.raises(ConfigError, match="content, not its path") as err:
        parse(site_settings({"kubeconfig": content}), config_dir=Path("."))
    assert SECRET not in str(err.value)


def test_from_settings_builds_without_touching_the_cluster(tmp_path: Path) -> None:
    with Blocking(1) as pool:
        context = BuildContext(config_dir=tmp_path, blocking=pool, clock=ManualClock(START))
        connector = KubernetesConnector.from_settings(
            site=site_settings({"kubeconfig": "missing.kubeconfig"}), context=context
        )
    assert connector.site_name == "oslo"
    assert connector.credentials() == f"kubeconfig {tmp_path / 'missing.kubeconfig'}"
    assert connector.kind is SiteKind.KUBERNETES
    assert not connector.supports(Ability.PROVISION)
    assert not connector.supports(Ability.GANG)  # no Kueue queue configured
    assert connector.supports(Ability.MIG) and connector.supports(Ability.FOLLOW)
