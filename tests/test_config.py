"""Loading settings: the demo config, environment overrides and clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from broker.api.auth import TokenVerifier, hash_token
from broker.config import load_latency, load_settings
from broker.db.connection import normalise_database_url
from broker.domain.enums import Role, SiteKind, Tier
from broker.domain.errors import ConfigError
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
        ("sdk_threads: 0", "sdk_threads"),
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


def test_sdk_threads_default_and_example(tmp_path: Path) -> None:
    from connectors.threads import DEFAULT_THREADS

    assert load_settings(DEMO_CONFIG, env={}).sdk_threads == DEFAULT_THREADS == 8
    assert load_settings(DEMO_CONFIG.parent / "example.yaml", env={}).sdk_threads == 8
    path = tmp_path / "c.yaml"
    path.write_text("sdk_threads: 3")
    assert load_settings(path, env={}).sdk_threads == 3


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


def _site_block(text: str, name: str) -> str:
    """The lines of one site's entry in a config file, comments included."""
    start = text.index(f"  - name: {name}\n")
    end = text.find("\n  - name: ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_example_real_sites_pass_their_connectors_settings_and_show_every_field() -> None:
    """The example's kubernetes, aws and gcp sites stay valid for their connectors, and each
    shows every field its connector accepts (set, or as a commented alternative)."""
    from pydantic import BaseModel

    from connectors.aws.settings import AwsSettings, parse_settings
    from connectors.gcp.settings import GcpConnectorSettings
    from connectors.gcp.settings import parse as parse_gcp
    from connectors.kubernetes.settings import KubernetesConnectorSettings
    from connectors.kubernetes.settings import parse as parse_kubernetes

    path = DEMO_CONFIG.parent / "example.yaml"
    text = path.read_text(encoding="utf-8")
    s = load_settings(path, env={})
    models: dict[SiteKind, type[BaseModel]] = {
        SiteKind.KUBERNETES: KubernetesConnectorSettings,
        SiteKind.AWS: AwsSettings,
        SiteKind.GCP: GcpConnectorSettings,
    }
    real = [site for site in s.sites if site.kind in models]
    assert sorted(site.kind for site in real) == sorted(models)
    for site in real:
        if site.kind is SiteKind.KUBERNETES:
            assert parse_kubernetes(site, config_dir=s.config_dir).kueue_queue == "broker"
        elif site.kind is SiteKind.AWS:
            assert parse_settings(site.connector, site=site).launch_template is not None
        else:
            parsed = parse_gcp(site, config_dir=s.config_dir)
            assert parsed.credentials_file == s.resolve("secrets/gpu-broker-sa.json")
        block = _site_block(text, site.name)
        missing = [
            f
            for f in models[site.kind].model_fields
            if not re.search(rf"^\s*(#\s*)?{f}:", block, re.MULTILINE)
        ]
        assert not missing, f"{site.name} does not show {missing}"


_POOL = (
    "sites: [{{name: lab, kind: sim, region: r, grid_zone: SE, pools: ["
    "{{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1, price_on_demand: 2}}, "
    "{{gpu_model: {model}, gpu_memory_gb: 48, gpus_per_node: 8, nodes: 1, price_on_demand: 1}}"
    "]}}]\n"
)


def test_a_pool_with_an_unknown_gpu_model_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(_POOL.format(model="RTX6000-ADA"))

    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})

    message = str(info.value)
    assert "'RTX6000-ADA'" in message
    assert "site 'lab' pool 1" in message and "sites.0.pools.1.gpu_model" in message
    assert "gpu_models: {RTX6000-ADA: {board_power_w:" in message


def test_a_wrongly_cased_model_is_refused_with_the_canonical_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(_POOL.format(model="l40s"))

    with pytest.raises(ConfigError, match="did you mean 'L40S'"):
        load_settings(path, env={})


def test_gpu_models_supply_the_missing_power_figure(tmp_path: Path) -> None:
    from carbon.power import GPU_MODELS, gpu_energy_kwh

    path = tmp_path / "c.yaml"
    path.write_text(
        "gpu_models: {RTX6000-ADA: {board_power_w: 300, memory_gb: 48},"
        " H100: {board_power_w: 350, memory_gb: 80}}\n" + _POOL.format(model="RTX6000-ADA")
    )

    s = load_settings(path, env={})

    table = s.power_table()
    assert table["RTX6000-ADA"].board_power_w == 300
    assert table["H100"].board_power_w == 350  # an override replaces the datasheet row
    assert GPU_MODELS["H100"].board_power_w == 700  # ... without touching the shipped table
    assert gpu_energy_kwh(model="RTX6000-ADA", gpus=2, hours=1, table=table) == 0.6


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("gpu_models: {X1: {board_power_w: 0, memory_gb: 8}}", "gpu_models.X1.board_power_w"),
        ("gpu_models: {X1: {board_power_w: 100}}", "gpu_models.X1.memory_gb"),
        ("gpu_models: {' X1': {board_power_w: 100, memory_gb: 8}}", "bad GPU model name"),
    ],
)
def test_invalid_gpu_models_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_settings(path, env={})


def test_the_example_config_shows_gpu_models(tmp_path: Path) -> None:
    import yaml

    # only this section: the rest of the example is other tests' business
    raw = yaml.safe_load((DEMO_CONFIG.parent / "example.yaml").read_text(encoding="utf-8"))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"gpu_models": raw["gpu_models"]}))
    assert load_settings(path, env={}).power_table()["RTX6000-ADA"].board_power_w == 300


def test_an_unreadable_latency_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("latency: {file: missing.csv}")
    with pytest.raises(ConfigError, match=r"cannot read latency file .*missing\.csv"):
        load_latency(load_settings(path, env={}))
    (tmp_path / "bad.csv").write_text("src,dst,rtt_ms\na,b,fast\n")
    path.write_text("latency: {file: bad.csv}")
    with pytest.raises(ConfigError, match=r"bad\.csv \(latency\.file\), line 2"):
        load_latency(load_settings(path, env={}))


def test_a_discovered_unknown_gpu_warns_naming_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Inventory must not crash on a GPU it does not know, nor stay silent about it."""
    from connectors.kubernetes.catalog import canonical_model

    with caplog.at_level("WARNING", logger="connectors.kubernetes.catalog"):
        assert canonical_model("NVIDIA-RTX-6000-Ada-Generation-SHARED") == "RTX-6000-ADA-GENERATION"
        assert canonical_model("NVIDIA-RTX-6000-Ada-Generation") == "RTX-6000-ADA-GENERATION"
        assert canonical_model("NVIDIA-H100-80GB-HBM3") == "H100"

    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # once per label, not once per inventory read of the same one
    assert "'RTX-6000-ADA-GENERATION'" in warnings[0]
    assert "gpu_models: {RTX-6000-ADA-GENERATION: {board_power_w:" in warnings[0]


def test_a_gcp_gpu_shape_with_an_unmapped_accelerator_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from connectors.gcp.catalog import MachineTypeInfo, PriceCatalog, ZoneTypes, offerings

    zone = ZoneTypes(
        zone="us-central1-a",
        machine_types=(
            MachineTypeInfo(
                name="x9-gpu-8g",
                cpus=96,
                memory_gb=1024,
                accelerator_type="nvidia-x9000",
                accelerator_count=8,
            ),
        ),
        accelerators=(),
    )
    with caplog.at_level("WARNING", logger="connectors.gcp.catalog"):
        found = offerings(region="us-central1", zones=[zone], prices=PriceCatalog({}), allow=None)

    assert found == []
    assert any(
        "x9-gpu-8g" in r.getMessage() and "'nvidia-x9000'" in r.getMessage() for r in caplog.records
    )
