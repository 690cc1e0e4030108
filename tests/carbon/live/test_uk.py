"""UKCarbonIntensitySource against the fake GB API: contract for national and regional zones,
the zone mapping, actual-over-forecast and half-hour to hour means."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from carbon.live import BadResponse, UKCarbonIntensitySource
from carbon.live.uk import REGIONS, region_id
from tests.carbon.contract import SourceContract
from tests.carbon.live.conftest import NOW, VirtualClock
from tests.carbon.live.fake_common import Reply
from tests.carbon.live.fake_uk import BAD_DATE, FakeUK

H = timedelta(hours=1)
NOW_HOUR = NOW.replace(minute=0)


class _UKContract(SourceContract):
    @pytest.fixture
    def source_under_test(
        self, make_uk: Callable[..., UKCarbonIntensitySource]
    ) -> UKCarbonIntensitySource:
        return make_uk()

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "FR"

    @pytest.fixture
    def now(self) -> datetime:
        return NOW

    @pytest.fixture
    def window(self) -> tuple[datetime, datetime]:
        return NOW_HOUR - 3 * H, NOW_HOUR + 6 * H


class TestUKNationalContract(_UKContract):
    @pytest.fixture
    def known_zone(self) -> str:
        return "GB"


class TestUKRegionalContract(_UKContract):
    @pytest.fixture
    def known_zone(self) -> str:
        return "GB-13"


def test_zone_mapping() -> None:
    assert region_id("GB") is None
    assert region_id("GB-13") == 13 and REGIONS[13] == "London"
    assert region_id("GB-1") == 1 and region_id("GB-17") == 17
    assert region_id("FR") is None and region_id("GB-") is None and region_id("GB-x") is None
    assert sorted(REGIONS) == list(range(1, 18))


async def test_national_current_is_the_current_half_hour(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    reading = await make_uk().current("GB", at=NOW)
    assert reading is not None
    assert [r.path for r in uk_fake.requests] == ["/intensity"]
    assert reading.at == NOW_HOUR  # the half-hour 10:00-10:30 holds 10:20
    assert reading.gco2_per_kwh == 200 + 20  # its forecast: it has not ended, no actual yet
    assert reading.forecast and reading.source == "carbonintensity-uk"


async def test_regional_current_reads_the_region(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    reading = await make_uk().current("GB-13", at=NOW)
    assert [r.path for r in uk_fake.requests] == ["/regional/regionid/13"]
    assert reading is not None and reading.gco2_per_kwh == 100 + 13 + 20
    assert reading.zone == "GB-13" and reading.forecast


async def test_past_hours_use_actuals_and_are_not_forecasts(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    readings = await make_uk().forecast("GB", start=NOW_HOUR - 2 * H, end=NOW_HOUR)
    assert [r.path for r in uk_fake.requests] == ["/intensity/2026-11-23T07:30Z/2026-11-23T10:00Z"]
    # By hand: 08:00 and 08:30 are half-hours 16 and 17; actual = 200 + n - 10.
    assert [(r.at, r.gco2_per_kwh, r.forecast) for r in readings] == [
        (NOW_HOUR - 2 * H, (206 + 207) / 2, False),
        (NOW_HOUR - 1 * H, (208 + 209) / 2, False),
    ]


async def test_an_hour_with_a_forecast_half_is_a_forecast(
    make_uk: Callable[..., UKCarbonIntensitySource], clock: VirtualClock
) -> None:
    clock.advance(25 * 60)  # 10:45: 10:00-10:30 has an actual, 10:30-11:00 only a forecast
    (reading,) = await make_uk().forecast("GB", start=NOW_HOUR, end=NOW_HOUR + H)
    assert reading.gco2_per_kwh == ((200 + 20 - 10) + (200 + 21)) / 2
    assert reading.forecast


async def test_future_hours_come_from_fw48h(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    readings = await make_uk().forecast("GB-13", start=NOW_HOUR + 2 * H, end=NOW_HOUR + 4 * H)
    assert [r.path for r in uk_fake.requests] == [
        "/regional/intensity/2026-11-23T11:30Z/fw48h/regionid/13"
    ]
    # 12:00, 12:30 are half-hours 24, 25: forecast 100 + 13 + n.
    assert [(r.at, r.gco2_per_kwh) for r in readings] == [
        (NOW_HOUR + 2 * H, (137 + 138) / 2),
        (NOW_HOUR + 3 * H, (139 + 140) / 2),
    ]
    assert all(r.forecast for r in readings)


async def test_the_past_range_is_capped_at_fourteen_days(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    readings = await make_uk().forecast("GB", start=NOW_HOUR - 20 * 24 * H, end=NOW_HOUR)
    (request,) = uk_fake.requests
    assert request.path == "/intensity/2026-11-09T10:00Z/2026-11-23T10:00Z"
    assert readings[0].at == datetime.fromisoformat("2026-11-09T10:00Z")
    assert len(readings) == 14 * 24


async def test_a_region_the_api_rejects_is_unknown(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    source = make_uk()
    assert await source.current("GB-99", at=NOW) is None
    assert await source.forecast("GB-99", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H) == []
    assert [r.path for r in uk_fake.requests] == [
        "/regional/regionid/99",
        "/regional/intensity/2026-11-23T10:30Z/fw48h/regionid/99",
    ]


async def test_zones_that_are_not_gb_cost_no_request(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    source = make_uk()
    for zone in ("FR", "GB-NIR", "GB-", "DE"):
        assert await source.current(zone, at=NOW) is None
    assert uk_fake.requests == []


async def test_a_national_400_is_an_error_not_an_unknown_zone(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    uk_fake.script(
        "/intensity", Reply(400, {"error": {"code": "400 Bad Request", "message": BAD_DATE}})
    )
    with pytest.raises(BadResponse) as caught:
        await make_uk().current("GB", at=NOW)
    assert caught.value.status == 400 and "valid datetime" in str(caught.value)
    assert len(uk_fake.requests) == 1


async def test_a_regional_400_about_the_date_is_not_an_unknown_zone(
    make_uk: Callable[..., UKCarbonIntensitySource], uk_fake: FakeUK
) -> None:
    body = {"error": {"code": "400 Bad Request", "message": BAD_DATE}}
    uk_fake.script("/regional/", Reply(400, body))
    with pytest.raises(BadResponse) as caught:
        await make_uk().forecast("GB-13", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
    assert caught.value.detail == f"400 Bad Request: {BAD_DATE}"
