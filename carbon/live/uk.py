"""The GB Carbon Intensity API (National Grid ESO / NESO) as a CarbonSource; no key needed.

Docs: https://carbon-intensity.github.io/api-definitions/ . Zones:

* ``"GB"`` is Great Britain as a whole, the national endpoints:
  ``/intensity`` (the current half-hour), ``/intensity/{from}/{to}`` (past, up to 14 days
  a call) and ``/intensity/{from}/fw48h`` (48 hours of forecast);
* ``"GB-<regionid>"`` is one region of the regional endpoints: ``/regional/regionid/{id}``,
  ``/regional/intensity/{from}/{to}/regionid/{id}`` and
  ``/regional/intensity/{from}/fw48h/regionid/{id}``. The API's ids (see `REGIONS`) are the 14
  DNO regions 1-14 plus England (15), Scotland (16) and Wales (17); ``GB-13`` is London. An id
  the API rejects (400 "Please enter a valid region ID") makes the zone unknown: None / [].

Any other zone (e.g. Electricity Maps' ``GB`` sub-zones) is not this source's and costs no
request. The national shape is ``{"data": [{"from", "to", "intensity": {"forecast",
"actual", "index"}}]}``; regional answers wrap the same periods in ``{"regionid",
"dnoregion", "shortname", "data": [...]}`` (a list of one region for ``/regionid/{id}``, the
region object itself for the time-range endpoints) and carry forecasts only.

Periods are half-hours; an hour is the mean of its two. A half-hour uses ``actual`` when the
API has one (an outturn estimate: not a forecast) and its ``forecast`` otherwise, and an hour
with any forecast half is marked ``forecast``. Each range is asked from half an hour before the
window, so the window's first half-hour is included whichever way the API rounds ``from``;
what falls outside the window is dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from carbon.basis import Basis
from carbon.live.base import LiveSource, Loaded, utc_now
from carbon.live.errors import BadResponse, ZoneUnknown
from carbon.live.http import Clock, HttpClient, Sleep
from carbon.live.series import Point, Series, hourly_means, parse_time, usable
from carbon.live.settings import UKCarbonIntensitySettings

__all__ = ["NATIONAL_ZONE", "REGIONS", "UKCarbonIntensitySource", "region_id"]

PROVIDER = "carbonintensity.org.uk"
SOURCE_NAME = "carbonintensity-uk"
NATIONAL_ZONE = "GB"
# The API's region ids (its /regional answers name them in `shortname`).
REGIONS: Mapping[int, str] = {
    1: "North Scotland",
    2: "South Scotland",
    3: "North West England",
    4: "North East England",
    5: "Yorkshire",
    6: "North Wales & Merseyside",
    7: "South Wales",
    8: "West Midlands",
    9: "East Midlands",
    10: "East England",
    11: "South West England",
    12: "South England",
    13: "London",
    14: "South East England",
    15: "England",
    16: "Scotland",
    17: "Wales",
}
_REGIONAL = re.compile(r"^GB-(\d{1,3})$")
_HALF_HOUR = timedelta(minutes=30)
_MAX_RANGE = timedelta(days=14)


def region_id(zone: str) -> int | None:
    """The API region id of a ``GB-<id>`` zone, None for ``GB`` and for other zones."""
    match = _REGIONAL.match(zone)
    return int(match.group(1)) if match else None


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def _bad_region(detail: str) -> bool:
    """Whether a 400 is the API's "Please enter a valid region ID i.e. 1-17." answer."""
    return "region id" in detail.lower()


class UKCarbonIntensitySource(LiveSource):
    """Half-hourly GB grid intensity, national ("GB") and regional ("GB-<regionid>")."""

    name: str = SOURCE_NAME
    # NESO's methodology counts direct (combustion) emissions only: operational, no other.
    bases: frozenset[Basis] = frozenset({"operational"})
    basis: Basis = "operational"

    def __init__(
        self,
        settings: UKCarbonIntensitySettings,
        *,
        session: aiohttp.ClientSession,
        clock: Clock = utc_now,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        http = HttpClient(
            provider=PROVIDER, settings=settings, session=session, clock=clock, sleep=sleep, rng=rng
        )
        super().__init__(http=http, settings=settings, clock=clock)

    def _knows(self, zone: str) -> bool:
        return zone == NATIONAL_ZONE or region_id(zone) is not None

    async def _get(self, zone: str, path: str) -> list[Any]:
        """The half-hour periods of an answer, national or regional."""
        try:
            body = await self._http.get_json(path, headers={"Accept": "application/json"})
        except BadResponse as exc:
            if exc.status == 400 and region_id(zone) is not None and _bad_region(exc.detail):
                raise ZoneUnknown(str(exc), provider=PROVIDER, status=400) from None
            raise
        data = body.get("data") if isinstance(body, Mapping) else None
        if region_id(zone) is not None:
            region = data[0] if isinstance(data, list) and data else data
            data = region.get("data") if isinstance(region, Mapping) else None
        if not isinstance(data, list):
            raise BadResponse(f"{PROVIDER}: {path} answered without periods", provider=PROVIDER)
        return data

    def _path(self, zone: str, window: str) -> str:
        """The path of `window` ("", "{from}/{to}" or "{from}/fw48h") for this zone."""
        rid = region_id(zone)
        if rid is None:
            return f"/intensity/{window}" if window else "/intensity"
        if not window:
            return f"/regional/regionid/{rid}"
        return f"/regional/intensity/{window}/regionid/{rid}"

    async def _latest(self, zone: str, *, offline: bool) -> Loaded | None:
        path = self._path(zone, "")

        async def fetch() -> Series:
            points = [_point(item) for item in await self._get(zone, path)]
            return tuple(p for p in points if p is not None)[-1:]

        return await self._load(zone, "latest", params={}, fetch=fetch, offline=offline)

    async def _past(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        begin = max(start - _HALF_HOUR, end - _MAX_RANGE)
        path = self._path(zone, f"{_stamp(begin)}/{_stamp(end)}")
        return await self._periods(zone, "range", path, offline=offline)

    async def _future(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        path = self._path(zone, f"{_stamp(start - _HALF_HOUR)}/fw48h")
        return await self._periods(zone, "fw48h", path, offline=offline)

    async def _periods(
        self, zone: str, endpoint: str, path: str, *, offline: bool
    ) -> Loaded | None:
        async def fetch() -> Series:
            points = (_point(item) for item in await self._get(zone, path))
            return hourly_means(p for p in points if p is not None)

        return await self._load(zone, endpoint, params={"path": path}, fetch=fetch, offline=offline)


def _point(item: object) -> Point | None:
    """A half-hour period: its actual when known, else its forecast (marked so)."""
    if not isinstance(item, Mapping):
        return None
    at = parse_time(item.get("from"))
    intensity = item.get("intensity")
    if at is None or not isinstance(intensity, Mapping):
        return None
    actual = usable(intensity.get("actual"))
    if actual is not None:
        return Point(at=at, value=actual, forecast=False)
    forecast = usable(intensity.get("forecast"))
    return None if forecast is None else Point(at=at, value=forecast, forecast=True)
