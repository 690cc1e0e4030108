"""FallbackSource: the contract (live up and live down), stale cache, gap filling, logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from carbon.base import CarbonSource
from carbon.basis import BasisMismatch
from carbon.live import (
    ElectricityMapsSource,
    FallbackSource,
    SourceUnavailable,
    UKCarbonIntensitySource,
)
from carbon.static import StaticTableSource
from tests.carbon.contract import SourceContract
from tests.carbon.live.conftest import NOW, VirtualClock
from tests.carbon.live.fake_common import Reply
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps

H = timedelta(hours=1)
NOW_HOUR = NOW.replace(minute=0)
DOWN = Reply(503, text="service unavailable")
LOGGER = "carbon.live.fallback"


@pytest.fixture
def static() -> StaticTableSource:
    return StaticTableSource.default()


@pytest.fixture
def em(make_em: Callable[..., ElectricityMapsSource]) -> ElectricityMapsSource:
    return make_em(max_attempts=2)


@pytest.fixture
def chain(em: ElectricityMapsSource, static: StaticTableSource) -> FallbackSource:
    return FallbackSource({"DE": [em, em.cached(), static]}, default=[static])


class TestFallbackContract(SourceContract):
    @pytest.fixture(params=["live up", "live down"])
    def source_under_test(
        self, request: pytest.FixtureRequest, chain: FallbackSource, em_fake: FakeElectricityMaps
    ) -> FallbackSource:
        if request.param == "live down":
            em_fake.down = DOWN
        return chain

    @pytest.fixture
    def known_zone(self) -> str:
        return "DE"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "XX-NOWHERE"

    @pytest.fixture
    def now(self) -> datetime:
        return NOW


def test_the_cached_view_is_a_carbon_source_of_its_own(em: ElectricityMapsSource) -> None:
    view = em.cached()
    assert isinstance(view, CarbonSource) and view.name == "electricitymaps:cached"


async def test_live_answers_first(chain: FallbackSource, em_fake: FakeElectricityMaps) -> None:
    reading = await chain.current("DE", at=NOW)
    assert reading is not None and reading.source == "electricitymaps" and not reading.stale


async def test_an_outage_falls_back_to_the_table_and_warns_once(
    chain: FallbackSource,
    static: StaticTableSource,
    em_fake: FakeElectricityMaps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    em_fake.down = DOWN
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(3):
        reading = await chain.current("DE", at=NOW)
        assert reading is not None and reading.source == "static"
        readings = await chain.forecast("DE", start=NOW_HOUR, end=NOW_HOUR + 3 * H)
        assert [r.source for r in readings] == ["static"] * 3
    entry = static.entry("DE")
    assert entry is not None and reading.gco2_per_kwh == entry.gco2_per_kwh
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    message = warnings[0].getMessage()
    assert "electricitymaps failed for zone DE" in message
    assert "SourceUnavailable" in message and "HTTP 503" in message
    assert "falling back to electricitymaps:cached, static" in message


async def test_recovery_is_logged_and_rearms_the_warning(
    chain: FallbackSource, em_fake: FakeElectricityMaps, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    em_fake.down = DOWN
    await chain.current("DE", at=NOW)
    em_fake.down = None
    reading = await chain.current("DE", at=NOW)
    assert reading is not None and reading.source == "electricitymaps"
    em_fake.down = DOWN
    await chain.forecast("DE", start=NOW_HOUR + 2 * H, end=NOW_HOUR + 3 * H)
    levels = [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert levels == [
        ("WARNING", "carbon source electricitymaps failed for zone DE"),
        ("INFO", "carbon source electricitymaps answers again for zone DE"),
        ("WARNING", "carbon source electricitymaps failed for zone DE"),
    ]


async def test_the_cache_answers_past_its_ttl_marked_stale(
    chain: FallbackSource,
    em: ElectricityMapsSource,
    em_fake: FakeElectricityMaps,
    clock: VirtualClock,
) -> None:
    window = {"start": NOW_HOUR + H, "end": NOW_HOUR + 4 * H}
    fresh = await chain.forecast("DE", **window)
    assert [r.stale for r in fresh] == [False] * 3
    assert [r.stale for r in await em.cached().forecast("DE", **window)] == [False] * 3
    clock.advance(301)  # past the 300 s TTL
    em_fake.down = DOWN
    served = await chain.forecast("DE", **window)
    assert [r.source for r in served] == ["electricitymaps"] * 3
    assert [r.stale for r in served] == [True] * 3
    assert [r.gco2_per_kwh for r in served] == [r.gco2_per_kwh for r in fresh]
    # `current` too: no latest value was ever cached, but the cached forecast has this hour.
    current = await chain.current("DE", at=NOW + timedelta(seconds=301))
    assert current is not None
    assert (current.source, current.at, current.stale, current.forecast) == (
        "electricitymaps",
        NOW_HOUR,
        True,
        True,
    )


async def test_stale_entries_are_dropped_after_the_keep_period(
    make_em: Callable[..., ElectricityMapsSource],
    static: StaticTableSource,
    em_fake: FakeElectricityMaps,
    clock: VirtualClock,
) -> None:
    em = make_em(max_attempts=1, cache_ttl_s=60, stale_keep_s=600)
    chain = FallbackSource({"DE": [em, em.cached(), static]})
    await chain.forecast("DE", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
    em_fake.down = DOWN
    clock.advance(60 + 599)
    (kept,) = await chain.forecast("DE", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
    assert kept.source == "electricitymaps" and kept.stale
    clock.advance(2)
    (dropped,) = await chain.forecast("DE", start=NOW_HOUR + H, end=NOW_HOUR + 2 * H)
    assert dropped.source == "static"


async def test_hours_the_live_forecast_lacks_come_from_the_next_source(
    chain: FallbackSource, em_fake: FakeElectricityMaps
) -> None:
    readings = await chain.forecast("DE", start=NOW_HOUR + 20 * H, end=NOW_HOUR + 30 * H)
    assert [r.at for r in readings] == [NOW_HOUR + i * H for i in range(20, 30)]
    assert [r.source for r in readings] == ["electricitymaps"] * 4 + ["static"] * 6


async def test_a_source_without_the_zone_is_passed_over_quietly(
    make_uk: Callable[..., UKCarbonIntensitySource],
    static: StaticTableSource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = FallbackSource({}, default=[make_uk(), StaticTableSource.default(basis="operational")])
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    reading = await chain.current("DE", at=NOW)
    assert reading is not None and reading.source == "static"
    assert caplog.records == []


def test_a_chain_that_mixes_bases_is_refused(
    make_uk: Callable[..., UKCarbonIntensitySource],
    make_em: Callable[..., ElectricityMapsSource],
    static: StaticTableSource,
) -> None:
    with pytest.raises(BasisMismatch, match="static serves the lifecycle basis") as caught:
        FallbackSource({}, default=[make_uk(), static])
    assert (caught.value.source, caught.value.basis) == ("static", "lifecycle")
    with pytest.raises(BasisMismatch, match="electricitymaps"):
        FallbackSource({"GB": [make_uk()], "DE": [make_em(basis="lifecycle")]})
    # Electricity Maps offers both bases: built for operational, it joins the GB API.
    em = make_em(basis="operational")
    chain = FallbackSource({}, default=[make_uk(), em, em.cached()])
    assert chain.basis == "operational"


async def test_when_every_source_fails_the_error_lists_them(
    em: ElectricityMapsSource, em_fake: FakeElectricityMaps
) -> None:
    em_fake.down = DOWN
    chain = FallbackSource({"DE": [em, em.cached()]})
    with pytest.raises(SourceUnavailable) as caught:
        await chain.current("DE", at=NOW)
    assert "no carbon source answered for zone DE" in str(caught.value)
    assert "electricitymaps: electricitymaps: /carbon-intensity/latest failed" in str(caught.value)
    with pytest.raises(SourceUnavailable):
        await chain.forecast("DE", start=NOW_HOUR, end=NOW_HOUR + H)


async def test_a_zone_no_source_knows_is_none_not_an_error(chain: FallbackSource) -> None:
    assert await chain.current("XX-NOWHERE", at=NOW) is None
    assert await chain.forecast("XX-NOWHERE", start=NOW_HOUR, end=NOW_HOUR + H) == []
    assert FallbackSource({}).chain("DE") == ()
