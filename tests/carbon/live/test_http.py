"""The shared HTTP behaviour, driven through ElectricityMapsSource and its fake: retries and
backoff, Retry-After, timeouts and refused connections, the TTL cache and the rate limit.

All waiting goes through the injected sleep, which records the delay and moves the virtual
clock: these tests take no wall time (the one timeout test waits 2 x 50 ms).
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from carbon.live import (
    BadResponse,
    ElectricityMapsSettings,
    ElectricityMapsSource,
    SourceUnavailable,
)
from carbon.live.http import parse_retry_after
from carbon.live.ratelimit import TokenBucket, rate_from
from tests.carbon.live.conftest import EM_ENV, NOW, Sleeps, VirtualClock
from tests.carbon.live.fake_common import Reply
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps

LATEST = "/v3/carbon-intensity/latest"
UNAVAILABLE = Reply(503, text="upstream unavailable")


async def test_429_with_retry_after_then_503_then_success(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    em_fake.script(LATEST, Reply(429, {"error": "Too many requests"}, headers={"Retry-After": "2"}))
    em_fake.script(LATEST, UNAVAILABLE)
    reading = await make_em().current("DE", at=NOW)
    assert reading is not None
    assert len(em_fake.hits(LATEST)) == 3
    # Retry-After is honoured as given; the 503 gets full jitter, pinned here to its cap:
    # min(backoff_max, backoff_base * 2^(2-1)) = 0.5 * 2 = 1.0.
    assert sleeps.delays == [2.0, 1.0]


async def test_503_until_the_attempts_run_out(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    em_fake.down = UNAVAILABLE
    with pytest.raises(SourceUnavailable) as caught:
        await make_em(max_attempts=4).current("DE", at=NOW)
    assert caught.value.status == 503 and caught.value.attempts == 4
    assert "after 4 attempt(s)" in str(caught.value)
    assert len(em_fake.requests) == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]  # 0.5 * 2^(n-1), no sleep after the last


async def test_backoff_is_full_jitter_below_a_capped_exponential(
    em_server: Any,
    em_fake: FakeElectricityMaps,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    sleeps: Sleeps,
    secrets_env: None,
) -> None:
    class Recording(random.Random):
        def __init__(self) -> None:
            super().__init__()
            self.bounds: list[tuple[float, float]] = []

        def uniform(self, a: float, b: float) -> float:
            self.bounds.append((a, b))
            return (a + b) / 2

    rng = Recording()
    settings = ElectricityMapsSettings(
        base_url=str(em_server.make_url("/v3")),
        api_key_env=EM_ENV,
        max_attempts=5,
        backoff_base_s=0.5,
        backoff_max_s=1.5,
    )
    source = ElectricityMapsSource(settings, session=session, clock=clock, sleep=sleeps, rng=rng)
    em_fake.down = UNAVAILABLE
    with pytest.raises(SourceUnavailable):
        await source.current("DE", at=NOW)
    assert rng.bounds == [(0.0, 0.5), (0.0, 1.0), (0.0, 1.5), (0.0, 1.5)]
    assert sleeps.delays == [0.25, 0.5, 0.75, 0.75]


async def test_retry_after_as_an_http_date(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    when = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    em_fake.script(LATEST, Reply(503, text="busy", headers={"Retry-After": when}))
    assert await make_em().current("DE", at=NOW) is not None
    assert sleeps.delays == [7.0]


async def test_a_retry_after_beyond_the_limit_fails_at_once(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    em_fake.script(LATEST, Reply(429, {"error": "quota"}, headers={"Retry-After": "600"}))
    with pytest.raises(SourceUnavailable) as caught:
        await make_em(retry_after_max_s=60).current("DE", at=NOW)
    assert caught.value.retry_after == 600.0 and caught.value.attempts == 1
    assert sleeps.delays == []
    assert len(em_fake.requests) == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after("3", now=NOW) == 3.0
    assert parse_retry_after(" 1.5 ", now=NOW) == 1.5
    assert parse_retry_after("-4", now=NOW) == 0.0
    assert parse_retry_after(format_datetime(NOW - timedelta(hours=1), usegmt=True), now=NOW) == 0
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("soon", now=NOW) is None
    assert parse_retry_after("nan", now=NOW) is None


async def test_other_client_errors_and_non_json_are_not_retried(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    em_fake.script(LATEST, Reply(422, {"error": "Unprocessable", "message": "bad zone format"}))
    with pytest.raises(BadResponse, match="bad zone format"):
        await make_em().current("DE", at=NOW)
    em_fake.script(LATEST, Reply(200, text="<html>maintenance</html>"))
    with pytest.raises(BadResponse, match="not JSON"):
        await make_em(cache_ttl_s=0).current("DE", at=NOW)
    assert len(em_fake.requests) == 2 and sleeps.delays == []


async def test_a_refused_connection_is_retried_then_unavailable(
    session: aiohttp.ClientSession, clock: VirtualClock, sleeps: Sleeps, secrets_env: None
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ElectricityMapsSettings(
        base_url=f"http://127.0.0.1:{port}/v3", api_key_env=EM_ENV, max_attempts=3
    )
    source = ElectricityMapsSource(settings, session=session, clock=clock, sleep=sleeps)
    with pytest.raises(SourceUnavailable) as caught:
        await source.current("DE", at=NOW)
    assert caught.value.status is None and caught.value.attempts == 3
    assert len(sleeps.delays) == 2


async def test_a_timeout_is_retried_then_unavailable(
    aiohttp_server: Any,
    session: aiohttp.ClientSession,
    clock: VirtualClock,
    sleeps: Sleeps,
    secrets_env: None,
) -> None:
    calls = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v3/carbon-intensity/latest", slow)
    server = await aiohttp_server(app)
    settings = ElectricityMapsSettings(
        base_url=str(server.make_url("/v3")), api_key_env=EM_ENV, timeout_s=0.05, max_attempts=2
    )
    source = ElectricityMapsSource(settings, session=session, clock=clock, sleep=sleeps)
    with pytest.raises(SourceUnavailable, match=r"timeout after 0\.05s"):
        await source.current("DE", at=NOW)
    assert calls == 2 and len(sleeps.delays) == 1


# ---- cache -------------------------------------------------------------------------------


async def test_a_fresh_cache_entry_saves_the_request(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, clock: VirtualClock
) -> None:
    source = make_em(cache_ttl_s=300)
    first = await source.current("DE", at=NOW)
    clock.advance(299)
    second = await source.current("DE", at=NOW)
    assert first == second
    assert len(em_fake.requests) == 1
    clock.advance(1)
    await source.current("DE", at=NOW)
    assert len(em_fake.requests) == 2


async def test_the_cache_is_per_zone_and_endpoint(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    source = make_em()
    await source.current("DE", at=NOW)
    await source.current("FR", at=NOW)
    await source.forecast("DE", start=NOW + timedelta(hours=2), end=NOW + timedelta(hours=3))
    await source.forecast("DE", start=NOW + timedelta(hours=5), end=NOW + timedelta(hours=9))
    await source.current("DE", at=NOW)
    assert [(r.path, r.query["zone"]) for r in em_fake.requests] == [
        ("/v3/carbon-intensity/latest", "DE"),
        ("/v3/carbon-intensity/latest", "FR"),
        ("/v3/carbon-intensity/forecast", "DE"),
    ]


async def test_concurrent_callers_share_one_request(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps
) -> None:
    source = make_em()
    readings = await asyncio.gather(*(source.current("DE", at=NOW) for _ in range(5)))
    assert len({r for r in readings}) == 1
    assert len(em_fake.requests) == 1


# ---- rate limit --------------------------------------------------------------------------


async def test_requests_are_spaced_by_the_rate_limit(
    make_em: Callable[..., ElectricityMapsSource],
    em_fake: FakeElectricityMaps,
    sleeps: Sleeps,
    clock: VirtualClock,
) -> None:
    source = make_em(requests_per_second=2, cache_ttl_s=0)
    for _ in range(3):
        await source.current("DE", at=NOW)
    assert len(em_fake.requests) == 3
    assert sleeps.delays == [0.5, 0.5]
    assert clock() == NOW + timedelta(seconds=1)


async def test_per_minute_limit_and_burst(
    make_em: Callable[..., ElectricityMapsSource], em_fake: FakeElectricityMaps, sleeps: Sleeps
) -> None:
    source = make_em(requests_per_minute=30, burst=2, cache_ttl_s=0)
    for _ in range(4):
        await source.current("DE", at=NOW)
    assert len(em_fake.requests) == 4
    assert sleeps.delays == [2.0, 2.0]  # two at once, then one every 60/30 s


async def test_the_bucket_reserves_slots_for_concurrent_callers() -> None:
    waits: list[float] = []

    async def record(delay: float) -> None:  # does not move time: every caller starts at 0
        waits.append(delay)

    bucket = TokenBucket(rate=2.0, burst=1, clock=lambda: 0.0, sleep=record)
    assert await asyncio.gather(*(bucket.acquire() for _ in range(4))) == [0.0, 0.5, 1.0, 1.5]
    assert waits == [0.5, 1.0, 1.5]


def test_the_tighter_of_the_two_limits_applies() -> None:
    assert rate_from(per_second=None, per_minute=None) is None
    assert rate_from(per_second=10, per_minute=None) == 10
    assert rate_from(per_second=10, per_minute=60) == 1.0
    assert rate_from(per_second=0.5, per_minute=600) == 0.5
