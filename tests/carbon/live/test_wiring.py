"""`carbon:` settings -> the chain the broker schedules on (carbon.wiring), against the fakes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from broker.config import load_settings
from carbon.basis import BasisMismatch
from carbon.settings import CarbonSettings
from carbon.static import StaticTableSource
from carbon.wiring import build_carbon
from tests.carbon.live.conftest import EM_ENV, NOW, url
from tests.carbon.live.fake_common import Reply, VirtualClock
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps
from tests.carbon.live.fake_uk import FakeUK
from tests.conftest import DEMO_CONFIG

SHARED_CARBON = Path(__file__).resolve().parents[4] / "shared" / "data" / "carbon" / "normalized"
HOUR = timedelta(hours=1)


def test_no_section_means_the_shipped_static_table(tmp_path: Path) -> None:
    setup = build_carbon(None, session=None, now=lambda: NOW, config_dir=tmp_path)
    assert isinstance(setup.source, StaticTableSource)
    assert setup.description == "static" and not setup.live and not setup.skipped


async def test_live_then_cached_then_static_through_an_outage(
    em_server: TestServer,
    em_fake: FakeElectricityMaps,
    uk_server: TestServer,
    uk_fake: FakeUK,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    secrets_env: None,
) -> None:
    settings = CarbonSettings.model_validate(
        {
            "electricitymaps": {
                "base_url": url(em_server, "/v3"),
                "api_key_env": EM_ENV,
                "max_attempts": 1,
            },
            "uk_carbon_intensity": {"base_url": url(uk_server), "max_attempts": 1},
            "basis": "operational",  # the GB API's only basis; Electricity Maps asks "direct"
        }
    )
    setup = build_carbon(settings, session=session, now=clock, config_dir=Path("."))
    assert setup.description == "uk_carbon_intensity -> electricitymaps -> own forecast -> static"

    # GB is answered by the UK API (first in the default order), DE by Electricity Maps.
    gb = await setup.source.current("GB", at=NOW)
    de = await setup.source.current("DE", at=NOW)
    assert gb is not None and gb.source == "carbonintensity-uk" and not gb.stale
    assert de is not None and de.source == "electricitymaps" and not de.stale
    summary = await setup.refresh(["DE", "GB"], now=NOW, hours=6)
    assert summary.startswith("carbon outlook refreshed for 2 zone(s)")
    taken = setup.take_observed()  # the past day as the providers measured it, for the DB
    assert {o.zone for o in taken} == {"DE", "GB"} and setup.take_observed() == []
    assert all(not o.source.startswith("broker") and o.hour < NOW for o in taken)

    # Outage past the TTL: the cached answers serve, marked stale...
    em_fake.down = Reply(503, {"error": "down"})
    clock.advance(settings.electricitymaps.cache_ttl_s + 60)  # type: ignore[union-attr]
    stale = await setup.source.current("DE", at=clock())
    assert stale is not None and stale.source == "electricitymaps" and stale.stale
    # ...and a zone nobody fetched before falls to the static table: scheduling goes on.
    fr = await setup.source.current("FR", at=clock())
    static = StaticTableSource.default(basis="operational").entry("FR")
    assert fr is not None and fr.source == "static" and static is not None
    assert fr.gco2_per_kwh == static.gco2_per_kwh


def test_a_key_that_cannot_be_read_turns_the_provider_off_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(EM_ENV, raising=False)
    settings = CarbonSettings.model_validate(
        {"electricitymaps": {"api_key_env": EM_ENV}, "static_table": None}
    )
    caplog.set_level(logging.WARNING, logger="carbon.wiring")

    async def build() -> None:
        async with aiohttp.ClientSession() as session:
            setup = build_carbon(settings, session=session, now=lambda: NOW, config_dir=tmp_path)
            assert setup.description == "static"
            assert EM_ENV in setup.skipped["electricitymaps"]

    import asyncio

    asyncio.run(build())
    assert any(EM_ENV in r.getMessage() for r in caplog.records)


def test_key_files_are_relative_to_the_config_and_never_inline(tmp_path: Path) -> None:
    (tmp_path / "em.key").write_text("em-SECRET-4f1c\n", encoding="utf-8")
    config = tmp_path / "broker.yaml"
    demo = DEMO_CONFIG.read_text(encoding="utf-8")
    config.write_text(demo + "\ncarbon:\n  electricitymaps: {api_key_file: em.key}\n", "utf-8")
    settings = load_settings(config, env={})
    em = settings.carbon.electricitymaps
    assert em is not None and str(em.api_key_file) == "em.key"

    inline = tmp_path / "inline.yaml"
    inline.write_text(demo + "\ncarbon:\n  electricitymaps: {api_key: em-SECRET-4f1c}\n", "utf-8")
    from broker.domain.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_settings(inline, env={})
    assert "inline secrets" in str(err.value) and "em-SECRET-4f1c" not in str(err.value)


@pytest.mark.skipif(not SHARED_CARBON.is_dir(), reason="needs ../shared/data/carbon")
async def test_replay_with_the_own_forecaster_hides_the_future(tmp_path: Path) -> None:
    files = [str(SHARED_CARBON / "electricitymaps_hourly_2021_2022.csv")]
    now = datetime(2022, 3, 1, 12, tzinfo=UTC)
    own = build_carbon(
        CarbonSettings.model_validate({"replay": {"files": files, "forecast": "own"}}),
        session=None,
        now=lambda: now,
        config_dir=tmp_path,
    )
    perfect = build_carbon(
        CarbonSettings.model_validate({"replay": {"files": files, "forecast": "perfect"}}),
        session=None,
        now=lambda: now,
        config_dir=tmp_path,
    )
    ahead = await own.source.forecast("ES", start=now, end=now + 6 * HOUR)
    seen = await perfect.source.forecast("ES", start=now, end=now + 6 * HOUR)
    assert len(ahead) == len(seen) == 6
    assert all(r.forecast and r.source == "broker-forecast" for r in ahead)
    assert all(r.source == "replay" for r in seen)
    # A forecast, not the recorded values: close on average, not identical.
    errors = [abs(a.gco2_per_kwh - s.gco2_per_kwh) for a, s in zip(ahead, seen, strict=True)]
    assert 0 < sum(errors) / len(errors) < 0.5 * sum(s.gco2_per_kwh for s in seen) / len(seen)


async def test_the_own_forecaster_learns_what_the_provider_reported(
    em_server: TestServer,
    em_fake: FakeElectricityMaps,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    secrets_env: None,
) -> None:
    """When the provider and its cache have nothing for an hour, the broker's forecast from
    the hours the provider reported fills it, before the flat annual table."""
    settings = CarbonSettings.model_validate(
        {
            "electricitymaps": {
                "base_url": url(em_server, "/v3"),
                "api_key_env": EM_ENV,
                "max_attempts": 1,
                "cache_ttl_s": 0,
                "stale_keep_s": 0,
            }
        }
    )
    setup = build_carbon(settings, session=session, now=clock, config_dir=Path("."))
    summary = await setup.refresh(["DE"], now=NOW)
    assert setup.recorded is not None and setup.recorded.hours("DE") >= 20
    assert "observed hour(s) recorded" in summary

    em_fake.down = Reply(503, {"error": "down"})
    clock.advance(60)
    nxt = clock().replace(minute=0, second=0, microsecond=0) + HOUR
    ahead = await setup.source.forecast("DE", start=nxt, end=nxt + 3 * HOUR)
    assert [r.source for r in ahead] == ["broker-forecast"] * 3
    assert all(r.forecast and r.estimated for r in ahead)  # a baseline until it can train
    # Under a day of history the baseline is persistence: the last hour the provider reported.
    recorded = setup.recorded.hourly("DE", start=NOW - 25 * HOUR, end=NOW)
    assert [r.gco2_per_kwh for r in ahead] == [recorded[-1][1]] * 3
    static = StaticTableSource.default().entry("DE")
    assert static is not None and recorded[-1][1] != static.gco2_per_kwh


async def test_broker_check_covers_the_carbon_providers(
    tmp_path: Path,
    em_server: TestServer,
    em_fake: FakeElectricityMaps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from broker.checks import check_configured, hint_for
    from broker.domain.clock import ManualClock
    from tests.carbon.live import fake_electricitymaps

    demo = DEMO_CONFIG.read_text(encoding="utf-8")
    config = tmp_path / "broker.yaml"
    config.write_text(
        demo + f"\ncarbon:\n  electricitymaps: {{api_key_env: {EM_ENV}, "
        f"base_url: '{url(em_server, '/v3')}', max_attempts: 1}}\n",
        encoding="utf-8",
    )
    settings = load_settings(config, env={})
    em_fake.zones["NO"] = 30.0  # the demo's Oslo site
    monkeypatch.setenv(EM_ENV, fake_electricitymaps.TOKEN)
    results = await check_configured(settings, clock=ManualClock(NOW))
    (em,) = [r for r in results if r.kind == "carbon"]
    assert (em.site, em.credentials, em.ok) == ("carbon:electricitymaps", f"env {EM_ENV}", True)
    assert em.items[0].detail.startswith("NO: ") and "gCO2e/kWh" in em.items[0].detail

    monkeypatch.delenv(EM_ENV)
    results = await check_configured(settings, clock=ManualClock(NOW))
    (em,) = [r for r in results if r.kind == "carbon"]
    assert not em.ok and em.items[0].name == "key"
    assert f"environment variable {EM_ENV} is not set" in em.items[0].detail
    assert hint_for(em.items[0]).startswith("put the key where the carbon settings name it")
    assert fake_electricitymaps.TOKEN not in repr(results)


def test_a_chain_of_mixed_bases_is_refused_at_build_time(tmp_path: Path) -> None:
    """Sources that cannot serve carbon.basis stop the build, naming source and basis."""
    lifecycle_only = tmp_path / "lwa.csv"
    lifecycle_only.write_text(
        "timestamp_utc,region,gco2_per_kwh\n2020-01-01T00:00:00Z,DE,300\n", encoding="utf-8"
    )
    settings = CarbonSettings.model_validate(
        {"basis": "operational", "replay": {"files": [str(lifecycle_only)]}}
    )
    with pytest.raises(BasisMismatch, match=r"replay file .*lwa\.csv cannot serve the oper"):
        build_carbon(settings, session=None, now=lambda: NOW, config_dir=tmp_path)
    # The same file under lifecycle, and a file with a direct column under operational, build.
    settings = CarbonSettings.model_validate({"replay": {"files": [str(lifecycle_only)]}})
    assert build_carbon(settings, session=None, now=lambda: NOW, config_dir=tmp_path)
    both = tmp_path / "em.csv"
    both.write_text(
        "timestamp_utc,region,gco2_per_kwh,gco2_per_kwh_direct,estimated\n"
        "2022-01-01T00:00:00Z,DE,300,250,false\n",
        encoding="utf-8",
    )
    settings = CarbonSettings.model_validate(
        {"basis": "operational", "replay": {"files": [str(both)], "forecast": "perfect"}}
    )
    setup = build_carbon(settings, session=None, now=lambda: NOW, config_dir=tmp_path)
    assert getattr(setup.source, "basis", None) == "operational"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"uk_carbon_intensity": {}}, "uk_carbon_intensity serves the operational basis only"),
        (
            {"watttime": {"username": "u", "password_env": "WT"}, "basis": "operational"},
            "watttime serves the marginal basis",
        ),
        (
            {"electricitymaps": {"api_key_env": "K", "emission_factor_type": "direct"}},
            "emission_factor_type direct is the operational basis but carbon.basis is lifecycle",
        ),
    ],
)
def test_settings_refuse_a_provider_off_the_basis(section: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CarbonSettings.model_validate(section)
