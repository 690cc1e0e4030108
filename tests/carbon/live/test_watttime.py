"""WattTimeSource against the fake API: contract, login and token renewal, units, hourly means."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from carbon.live import BadResponse, SourceAuthError, WattTimeSource
from carbon.live.watttime import LBS_PER_MWH_TO_G_PER_KWH
from tests.carbon.contract import SourceContract
from tests.carbon.live.conftest import NOW, VirtualClock
from tests.carbon.live.fake_common import Reply
from tests.carbon.live.fake_watttime import PASSWORD, USERNAME, FakeWattTime

H = timedelta(hours=1)
NOW_HOUR = NOW.replace(minute=0)


class TestWattTimeContract(SourceContract):
    @pytest.fixture
    def source_under_test(self, make_wt: Callable[..., WattTimeSource]) -> WattTimeSource:
        return make_wt()

    @pytest.fixture
    def known_zone(self) -> str:
        return "US-CAL-CISO"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "XX"

    @pytest.fixture
    def now(self) -> datetime:
        return NOW

    @pytest.fixture
    def window(self) -> tuple[datetime, datetime]:
        return NOW_HOUR - 2 * H, NOW_HOUR + 5 * H


def test_the_conversion_factor_is_pounds_to_grams_per_mwh_to_kwh() -> None:
    # 1 lb = 453.59237 g exactly; 1 MWh = 1000 kWh.
    assert math.isclose(LBS_PER_MWH_TO_G_PER_KWH, 0.45359237, rel_tol=1e-15)
    assert math.isclose(1000 * LBS_PER_MWH_TO_G_PER_KWH, 453.59237, rel_tol=1e-15)


async def test_five_minute_moer_becomes_hourly_g_per_kwh(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    readings = await make_wt().forecast("US-CAL-CISO", start=NOW_HOUR - 1 * H, end=NOW_HOUR + 2 * H)
    assert [r.at for r in readings] == [NOW_HOUR + i * H for i in range(-1, 2)]
    # By hand: the fake's MOER is 900 + minute lbs/MWh. A whole hour has the 12 points
    # :00..:55, mean minute (0+5+...+55)/12 = 27.5, so 927.5 lbs/MWh = 927.5 * 0.45359237.
    full_hour = 927.5 * 453.59237 / 1000
    assert full_hour == pytest.approx(420.70692, abs=1e-5)
    # The current hour (10:00-10:20) has the 5 points :00..:20 so far: mean minute 10.
    so_far = 910.0 * 453.59237 / 1000
    previous, current, following = readings
    assert previous.gco2_per_kwh == pytest.approx(full_hour, rel=1e-12)
    assert not previous.forecast
    assert current.gco2_per_kwh == pytest.approx(so_far, rel=1e-12)
    assert not current.forecast  # measured so far beats the forecast of the same hour
    assert following.gco2_per_kwh == pytest.approx(full_hour, rel=1e-12)
    assert following.forecast
    assert {r.source for r in readings} == {"watttime:moer"}


async def test_requests_carry_region_signal_window_and_bearer_token(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    await make_wt(forecast_horizon_hours=48).forecast(
        "US-CAL-CISO", start=NOW_HOUR - 2 * H, end=NOW_HOUR + 2 * H
    )
    login, *data = wt_fake.requests
    assert login.path == "/login"
    basic = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert login.headers["authorization"] == f"Basic {basic}"
    by_path = {r.path: r for r in data}
    assert by_path["/v3/historical"].query == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "start": "2026-11-23T08:00:00Z",
        "end": "2026-11-23T11:00:00Z",
    }
    assert by_path["/v3/forecast"].query == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "horizon_hours": "48",
    }
    assert {r.headers["authorization"] for r in data} == {"Bearer wt-token-1-7c1d"}
    assert wt_fake.logins == 1


async def test_an_expired_token_is_renewed_once_and_the_call_retried(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    source = make_wt(cache_ttl_s=0)
    assert await source.signal_index("US-CAL-CISO") is not None
    wt_fake.expire_tokens()
    again = await source.signal_index("US-CAL-CISO")
    assert again is not None and again.percentile == 53.0
    assert [r.path for r in wt_fake.requests] == [
        "/login",
        "/v3/signal-index",
        "/v3/signal-index",  # 401: the token expired
        "/login",
        "/v3/signal-index",
    ]
    assert wt_fake.requests[-1].headers["authorization"] == "Bearer wt-token-2-7c1d"


async def test_a_token_is_renewed_before_its_lifetime_ends(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime, clock: VirtualClock
) -> None:
    source = make_wt(cache_ttl_s=0, token_ttl_s=1500)
    await source.signal_index("US-CAL-CISO")
    clock.advance(1499)
    await source.signal_index("US-CAL-CISO")
    assert wt_fake.logins == 1
    clock.advance(2)
    await source.signal_index("US-CAL-CISO")
    assert wt_fake.logins == 2
    assert [r.path for r in wt_fake.requests].count("/v3/signal-index") == 3  # no 401 at all


async def test_a_second_401_after_logging_in_again_is_an_auth_error(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    wt_fake.script("/v3/", Reply(401, {"error": "Unauthorized"}), Reply(401, {"error": "no"}))
    with pytest.raises(SourceAuthError) as caught:
        await make_wt().signal_index("US-CAL-CISO")
    assert caught.value.status == 401
    assert wt_fake.logins == 2


async def test_wrong_credentials_fail_the_login_without_retry(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARBON_TEST_WT_PASSWORD", "not-the-password")
    with pytest.raises(SourceAuthError) as caught:
        await make_wt().current("US-CAL-CISO", at=NOW)
    assert "/login" in str(caught.value) and "not-the-password" not in str(caught.value)
    assert [r.path for r in wt_fake.requests] == ["/login"]


async def test_a_region_outside_the_plan_is_a_403_auth_error_naming_it(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    with pytest.raises(SourceAuthError) as caught:
        await make_wt().forecast("US-MIDA-PJM", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
    assert caught.value.status == 403
    assert "Invalid scope" in str(caught.value)
    assert [r.path for r in wt_fake.requests] == ["/login", "/v3/forecast"]  # no retry
    assert wt_fake.requests[-1].query["region"] == "PJM_ROANOKE"


async def test_signal_index_is_a_percentile_not_a_reading(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    wt_fake.percentile = 87.0
    index = await make_wt().signal_index("US-CAL-CISO")
    assert index is not None
    assert (index.zone, index.region, index.percentile) == ("US-CAL-CISO", "CAISO_NORTH", 87.0)
    assert index.at == NOW
    assert wt_fake.requests[-1].query == {"region": "CAISO_NORTH", "signal_type": "co2_moer"}


async def test_an_unmapped_zone_costs_no_request(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    source = make_wt()
    assert await source.current("DE", at=NOW) is None
    assert await source.forecast("DE", start=NOW_HOUR, end=NOW_HOUR + H) == []
    assert await source.signal_index("DE") is None
    assert wt_fake.requests == []


async def test_unexpected_units_are_a_bad_response(
    make_wt: Callable[..., WattTimeSource], wt_fake: FakeWattTime
) -> None:
    odd = {
        "data": [{"point_time": "2026-11-23T11:00:00+00:00", "value": 5}],
        "meta": {"units": "tons_per_fortnight"},
    }
    wt_fake.script("/v3/forecast", Reply(200, odd))
    with pytest.raises(BadResponse, match="tons_per_fortnight"):
        await make_wt().forecast("US-CAL-CISO", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
