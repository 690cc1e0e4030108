"""What every live source shares: splitting a window into past and future, the TTL cache, and
the cached view that keeps answering from it during an outage.

A provider says three things about a zone: the latest value, what happened (history) and what
is expected (forecast). A subclass implements those as hooks returning hourly `Series`; this
base turns them into the CarbonSource protocol:

* ``forecast(zone, start, end)`` asks the *past* hook for the hours up to and including the
  current one and the *future* hook for the current hour onwards, then keeps, hour by hour, the
  past value when both have one (a measurement beats a forecast). Hours neither covers are
  left out; the result is in hour order, UTC, starting with the hour containing ``start``.
* ``current(zone, at)`` uses the *latest* hook when ``at`` falls in the current hour, and
  otherwise the hour of the window [hour of at, +1h).

Each hook loads through `_load`, one TTL-cache entry per (zone, endpoint): a fresh entry
saves the request, concurrent callers for the same key share one request. `cached()` returns
a second CarbonSource reading the same cache without any I/O, entries past their TTL marked
``stale``; a fallback chain puts it after the live source (live -> cached -> static).

A provider that says the zone does not exist raises `ZoneUnknown` in a hook; here it becomes
None / [] as the protocol asks. Every other `SourceError` propagates to the caller.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from carbon.base import IntensityReading
from carbon.basis import Basis
from carbon.live.cache import TTLCache
from carbon.live.errors import ZoneUnknown
from carbon.live.http import Clock, HttpClient
from carbon.live.series import HOUR, Point, Series, as_utc, floor_hour
from carbon.live.settings import LiveSourceSettings

__all__ = ["CachedView", "LiveSource", "Loaded", "utc_now"]

log = logging.getLogger(__name__)

# A series and whether it came from a cache entry past its TTL.
Loaded = tuple[Series, bool]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LiveSource(ABC):
    """Base of the HTTP-backed CarbonSources; subclasses implement the three hooks."""

    name: str
    # The bases the provider can serve, and the one this instance serves (readings carry it).
    bases: frozenset[Basis]
    basis: Basis

    def __init__(self, *, http: HttpClient, settings: LiveSourceSettings, clock: Clock) -> None:
        self._http = http
        self._clock = clock
        self._cache: TTLCache[tuple[str, str], Series] = TTLCache(
            ttl_s=settings.cache_ttl_s, keep_s=settings.stale_keep_s
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, http={self._http!r})"

    # ---- the CarbonSource protocol ------------------------------------------------------

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        """The value in force at `at`: the latest one in the current hour, else that hour's."""
        return await self.read_current(zone, at=at, offline=False)

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        """Hourly readings for [start, end): measured where the past is known, else forecast."""
        return await self.read_forecast(zone, start=start, end=end, offline=False)

    def cached(self) -> CachedView:
        """A CarbonSource answering from this source's cache only (no requests)."""
        return CachedView(self)

    # ---- shared logic ---------------------------------------------------------------------

    async def read_current(
        self, zone: str, *, at: datetime, offline: bool
    ) -> IntensityReading | None:
        """`current`, from the network (`offline=False`) or from the cache only."""
        at_utc = as_utc(at, name="at")
        if not self._knows(zone):
            return None
        hour = floor_hour(at_utc)
        if hour == floor_hour(self._clock()):
            try:
                latest = await self._latest(zone, offline=offline)
            except ZoneUnknown:
                log.debug("%s: zone %s unknown to the provider", self.name, zone)
                return None
            if latest is not None and latest[0]:
                return self._reading(zone, latest[0][-1], stale=latest[1])
        readings = await self.read_forecast(zone, start=hour, end=hour + HOUR, offline=offline)
        return readings[0] if readings else None

    async def read_forecast(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> list[IntensityReading]:
        """`forecast`, from the network (`offline=False`) or from the cache only."""
        start_utc = as_utc(start, name="start")
        end_utc = as_utc(end, name="end")
        if end_utc <= start_utc or not self._knows(zone):
            return []
        first = floor_hour(start_utc)
        now_hour = floor_hour(self._clock())
        chosen: dict[datetime, tuple[Point, bool]] = {}
        try:
            if first <= now_hour:
                past_end = min(end_utc, now_hour + HOUR)
                _merge(chosen, await self._past(zone, start=first, end=past_end, offline=offline))
            if end_utc > now_hour:
                future_start = max(first, now_hour)
                _merge(
                    chosen,
                    await self._future(zone, start=future_start, end=end_utc, offline=offline),
                )
        except ZoneUnknown:
            log.debug("%s: zone %s unknown to the provider", self.name, zone)
            return []
        return [
            self._reading(zone, point, stale=stale)
            for hour, (point, stale) in sorted(chosen.items())
            if first <= hour < end_utc
        ]

    def _reading(self, zone: str, point: Point, *, stale: bool) -> IntensityReading:
        return IntensityReading(
            zone=zone,
            at=point.at,
            gco2_per_kwh=point.value,
            source=self.name,
            forecast=point.forecast,
            estimated=point.estimated,
            stale=stale,
            basis=self.basis,
        )

    async def _load(
        self,
        zone: str,
        endpoint: str,
        *,
        params: Mapping[str, str],
        fetch: Callable[[], Awaitable[Series]],
        offline: bool,
    ) -> Loaded | None:
        """The series of (zone, endpoint): fresh from the cache, else fetched and cached.

        Offline, the newest cached series whatever its parameters, or None when none is kept.
        """
        key = (zone, endpoint)
        asked = tuple(sorted(params.items()))
        if offline:
            hit = self._cache.any_age(key, self._clock())
            return None if hit is None else (hit[0], hit[1])
        fresh = self._cache.fresh(key, asked, self._clock())
        if fresh is not None:
            return fresh, False
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one request per key at a time; latecomers find it cached
            fresh = self._cache.fresh(key, asked, self._clock())
            if fresh is not None:
                return fresh, False
            series = await fetch()
            self._cache.put(key, asked, series, self._clock())
            return series, False

    # ---- hooks ------------------------------------------------------------------------------

    def _knows(self, zone: str) -> bool:
        """False for zones this source can tell are not its own without asking."""
        return True

    async def _latest(self, zone: str, *, offline: bool) -> Loaded | None:
        """The provider's latest value (a series of at most one point); default: none."""
        return None

    @abstractmethod
    async def _past(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        """Hourly measured (or estimated) values around [start, end), hours in the past."""

    @abstractmethod
    async def _future(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        """Hourly forecast values around [start, end), from the current hour on."""


def _merge(chosen: dict[datetime, tuple[Point, bool]], loaded: Loaded | None) -> None:
    """Add the hours of `loaded` not already chosen (earlier loads win)."""
    if loaded is None:
        return
    series, stale = loaded
    for point in series:
        chosen.setdefault(point.at, (point, stale))


class CachedView:
    """The cache of a live source as a CarbonSource of its own: no I/O, stale entries marked.

    Its readings keep the live source's name in `source`; what sets them apart is ``stale``
    (true once the entry is past the TTL). It knows nothing it was never told: a zone never
    fetched is None / [], which lets a fallback chain move on to a static table.
    """

    def __init__(self, source: LiveSource) -> None:
        self.name = f"{source.name}:cached"
        self.bases = source.bases
        self.basis = source.basis
        self._source = source

    def __repr__(self) -> str:
        return f"CachedView({self._source!r})"

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        return await self._source.read_current(zone, at=at, offline=True)

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        return await self._source.read_forecast(zone, start=start, end=end, offline=True)
