"""The GCP site's `connector:` settings: defaults, resolved paths, and refused inline keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.domain.clock import ManualClock
from broker.domain.errors import ConfigError
from connectors.base import Ability, BuildContext
from connectors.gcp.connector import GcpConnector
from connectors.gcp.settings import DEFAULT_IMAGE, parse
from connectors.threads import Blocking
from tests.connectors.gcp.conftest import START, site_settings
from tests.connectors.gcp.fake_auth import ServiceAccountKey

KEY = ServiceAccountKey.generate(email="x@p.iam.gserviceaccount.com")


def _parse(tmp_path: Path, **connector: Any) -> Any:
    return parse(site_settings(**connector), config_dir=tmp_path)


def test_defaults_and_paths_resolved_against_the_config_dir(tmp_path: Path) -> None:
    s = _parse(
        tmp_path,
        project="my-project",
        credentials_file="keys/sa.json",
        startup_script_file="/etc/broker/join.sh",
    )
    assert s.region == "us-central1"  # the site's region
    assert s.zones == ()  # every zone of the region, discovered
    assert s.credentials_file == tmp_path / "keys" / "sa.json"
    assert s.startup_script_file == Path("/etc/broker/join.sh")
    assert s.price_catalog is None
    assert s.owner == "gpu-broker"
    assert s.max_nodes == 16
    assert s.source_image == DEFAULT_IMAGE
    assert s.machine_types is None


def test_application_default_credentials_need_no_setting(tmp_path: Path) -> None:
    assert _parse(tmp_path, project="my-project").credentials_file is None


@pytest.mark.parametrize(
    "connector",
    [
        {"private_key": KEY.private_key_pem},
        {"credentials_json": '{"type": "service_account", "private_key": "x"}'},
        {"credentials_file": '{"type": "service_account", "private_key": "x"}'},
        {"credentials_file": KEY.private_key_pem},
    ],
    ids=["private_key", "credentials_json", "json-in-path", "pem-in-path"],
)
def test_inline_keys_are_refused_without_echoing_them(
    tmp_path: Path, connector: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(tmp_path, project="my-project", **connector)
    message = str(err.value)
    assert "credentials_file" in message
    assert "PRIVATE KEY" not in message
    assert all(line not in message for line in KEY.key_body_lines)
    assert '"x"' not in message


@pytest.mark.parametrize(
    ("connector", "complaint"),
    [
        ({"project": "my-project", "zone": "us-central1-a"}, "zone"),
        ({"project": "my-project", "zones": ["europe-west4-a"]}, "not in region"),
        ({"project": "my-project", "zones": ["us-central1-a", "us-central1-a"]}, "repeat"),
        ({"project": "my-project", "owner": "Team Broker"}, "owner"),
        ({"project": "my-project", "api_endpoint": "127.0.0.1:8080"}, "api_endpoint"),
        ({"project": "my-project", "max_nodes": 0}, "max_nodes"),
        ({"project": "X"}, "project"),
        ({}, "project"),
    ],
)
def test_invalid_settings_name_the_field(
    tmp_path: Path, connector: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        _parse(tmp_path, **connector)


def test_region_override_checks_zones_against_it(tmp_path: Path) -> None:
    s = _parse(tmp_path, project="my-project", region="europe-west4", zones=["europe-west4-a"])
    assert (s.region, s.zones) == ("europe-west4", ("europe-west4-a",))


def test_from_settings_builds_the_connector_for_its_site(tmp_path: Path) -> None:
    site = site_settings(project="my-project")
    with Blocking(1) as pool:
        context = BuildContext(config_dir=tmp_path, blocking=pool, clock=ManualClock(START))
        connector = GcpConnector.from_settings(site=site, context=context)
    assert connector.site_name == "gcp-us-central1"
    assert connector.kind.value == "gcp"
    assert connector.supports(Ability.PROVISION) and connector.supports(Ability.SPOT)
    for lacked in (Ability.DISPATCH, Ability.CANCEL, Ability.FOLLOW, Ability.MIG):
        assert not connector.supports(lacked)
