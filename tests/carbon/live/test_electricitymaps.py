"""ElectricityMapsSource against the fake API: the contract, then the provider's details."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from carbon.live import ElectricityMapsSource, SourceAuthError
from tests.carbon.contract import SourceContract
from tests.carbon.live.conftest import NOW
from tests.carbon.live.fake_electricitymaps import FORECAST_BIAS, TOKEN, FakeElectricityMaps

H = timedelta(hours=1)
NOW_HOUR = NOW.replace(minute=0)


class TestElectricityMapsContract(SourceContract):
    @pytest.fixture
    def source_under_test(
        self, make_em: Callable[..., ElectricityMapsSource]
    ) -> ElectricityMapsSource:
        return make_em()

    @pytest.fixture
    def known_zone(self) -> str:
        return "DE"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "XX"

    @pytest.fixture
    def now(self) -> datetime:
        return NOW

    @pytest.fixture
    def window(self) -> tuple[datetime, datetime]:
        return NOW_HOUR - 3 * H, NOW_HOUR + 6 * H  # history and forecast both


async def test_latest_sends_the_key_header_and_lifecycle_factor(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    reading = await make_em().current("DE", at=NOW)
    assert reading is not None
    (request,) = em_fake.requests
    assert request.path == "/v3/carbon-intensity/latest"
    assert request.headers["auth-token"] == TOKEN
    assert request.query == {"zone": "DE", "emissionFactorType": "lifecycle"}
    assert reading.at == NOW_HOUR
    assert reading.gco2_per_kwh == 300.0 + 3 * 10
    assert reading.source == "electricitymaps"
    assert reading.estimated  # the fake's latest says isEstimated / TIME_SLICER_AVERAGE
    assert not reading.forecast


async def test_direct_emission_factors_come_from_the_settings(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    reading = await make_em(emission_factor_type="direct").current("DE", at=NOW)
    assert em_fake.requests[0].query["emissionFactorType"] == "direct"
    assert reading is not None and reading.gco2_per_kwh == round((300.0 + 30) * 0.8, 2)


@pytest.mark.parametrize(
    ("basis", "factor"), [("operational", "direct"), ("lifecycle", "lifecycle")]
)
async def test_every_request_asks_for_the_deployments_basis(
    make_em: Callable[..., ElectricityMapsSource],
    em_fake: FakeElectricityMaps,
    basis: str,
    factor: str,
) -> None:
    source = make_em(basis=basis)
    assert source.basis == basis and source.bases == {"operational", "lifecycle"}
    latest = await source.current("DE", at=NOW)
    ahead = await source.forecast("DE", start=NOW_HOUR - 2 * H, end=NOW_HOUR + 3 * H)
    assert {r.query["emissionFactorType"] for r in em_fake.requests} == {factor}
    assert len(em_fake.requests) == 3  # latest, history, forecast
    lifecycle = 300.0 + 3 * NOW_HOUR.hour
    expected = lifecycle if factor == "lifecycle" else round(lifecycle * 0.8, 2)
    assert latest is not None and latest.gco2_per_kwh == expected
    assert {r.basis for r in [latest, *ahead]} == {basis}


async def test_the_fake_refuses_an_unknown_emission_factor_type(
    em_fake: FakeElectricityMaps, em_server: object, session: object
) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    assert isinstance(em_server, TestServer) and isinstance(session, aiohttp.ClientSession)
    url = em_server.make_url("/v3/carbon-intensity/latest")
    params = {"zone": "DE", "emissionFactorType": "marginal"}
    async with session.get(url, params=params, headers={"auth-token": TOKEN}) as reply:
        assert reply.status == 400


async def test_the_key_may_live_in_a_file(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, key_file: object
) -> None:
    source = make_em(api_key_env=None, api_key_file=key_file)
    assert await source.current("DE", at=NOW) is not None
    assert em_fake.requests[0].headers["auth-token"] == TOKEN


async def test_history_is_measured_and_forecast_is_forecast(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    readings = await make_em().forecast("DE", start=NOW_HOUR - 2 * H, end=NOW_HOUR + 3 * H)
    assert [r.at for r in readings] == [NOW_HOUR + i * H for i in range(-2, 3)]
    measured, future = readings[:3], readings[3:]
    # Hours up to the current one come from history: measured, the newest two estimated ...
    assert [r.forecast for r in measured] == [False, False, False]
    assert [r.estimated for r in measured] == [False, True, True]
    assert measured[2].gco2_per_kwh == 330.0  # history wins over the forecast for this hour
    # ... later hours from the forecast endpoint.
    assert all(r.forecast and not r.estimated for r in future)
    assert [r.gco2_per_kwh for r in future] == [333.0 + FORECAST_BIAS, 336.0 + FORECAST_BIAS]
    assert sorted(r.path for r in em_fake.requests) == [
        "/v3/carbon-intensity/forecast",
        "/v3/carbon-intensity/history",
    ]


async def test_a_future_window_asks_only_the_forecast(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    readings = await make_em().forecast("DE", start=NOW_HOUR + 2 * H, end=NOW_HOUR + 4 * H)
    assert len(readings) == 2 and all(r.forecast for r in readings)
    assert [r.path for r in em_fake.requests] == ["/v3/carbon-intensity/forecast"]


async def test_hours_beyond_the_forecast_are_left_out(
    make_em: Callable[..., ElectricityMapsSource],
) -> None:
    readings = await make_em().forecast("DE", start=NOW_HOUR + 20 * H, end=NOW_HOUR + 30 * H)
    assert [r.at for r in readings] == [NOW_HOUR + i * H for i in range(20, 24)]


async def test_current_of_an_earlier_hour_reads_history(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    reading = await make_em().current("DE", at=NOW - 5 * H)
    assert reading is not None and reading.at == NOW_HOUR - 5 * H
    assert reading.gco2_per_kwh == 300.0 + 3 * 5 and not reading.forecast
    assert [r.path for r in em_fake.requests] == ["/v3/carbon-intensity/history"]


async def test_unknown_zone_404_is_none_and_empty(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    source = make_em()
    assert await source.current("XX", at=NOW) is None
    assert await source.forecast("XX", start=NOW_HOUR, end=NOW_HOUR + H) == []
    assert em_fake.requests and all(r.query["zone"] == "XX" for r in em_fake.requests)


async def test_an_answer_for_another_zone_is_not_passed_off(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    em_fake.answer_zone = "FR"  # what the API's caller-location fallback would do
    assert await make_em().current("DE", at=NOW) is None


async def test_a_bad_token_is_an_auth_error_without_retry(
    make_em: Callable[..., ElectricityMapsSource],
    em_fake: FakeElectricityMaps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARBON_TEST_EM_TOKEN", "revoked-token-0000")
    with pytest.raises(SourceAuthError) as caught:
        await make_em().current("DE", at=NOW)
    assert caught.value.status == 401 and caught.value.attempts == 1
    assert "Invalid auth-token" in str(caught.value)
    assert "revoked-token-0000" not in str(caught.value)
    assert len(em_fake.requests) == 1
