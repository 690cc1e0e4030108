"""WattTime API v3 as a CarbonSource (https://docs.watttime.org/).

WattTime publishes a MARGINAL signal: ``co2_moer``, the marginal operating emissions rate,
is the emission rate of the generators that respond to a change in load, not the average
intensity of the grid mix that Electricity Maps, the GB API and the static table give. It is
the right signal for "does shifting this job cut emissions" and the wrong one for an
attributional footprint; readings say so in their source name, ``watttime:moer``, and must
not be mixed with average-intensity readings in one report.

Protocol:

* ``GET /login`` with HTTP basic auth -> ``{"token": ...}``, a bearer token that lasts 30
  minutes. It is cached for `token_ttl_s`; a 401 on a data call logs in again once and
  retries that call, a second 401 is a `SourceAuthError`.
* ``GET /v3/historical?region=&start=&end=&signal_type=co2_moer`` and
  ``GET /v3/forecast?region=&signal_type=co2_moer&horizon_hours=`` ->
  ``{"data": [{"point_time", "value"}...], "meta": {"units": "lbs_co2_per_mwh",
  "data_point_period_seconds": 300, ...}}``. Values in lbs/MWh become g/kWh
  (x 453.59237 / 1000); five-minute points become hourly means.
* ``GET /v3/signal-index?region=&signal_type=co2_moer`` -> the current MOER as a percentile
  (0-100) of the region's recent range: exposed by `signal_index`, not as a reading, since it
  is not an intensity.

Zones: the broker speaks Electricity Maps zone ids, WattTime its own region codes; the
settings' ``regions`` maps one to the other (``US-CAL-CISO: CAISO_NORTH``). A zone not in
the map is unknown here and costs no request. A 403 (the region is not in the account's plan)
is a `SourceAuthError`: a fallback chain moves on, and the message says which region.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from pydantic import SecretStr

from carbon.basis import Basis
from carbon.live.base import LiveSource, Loaded, utc_now
from carbon.live.errors import BadResponse, SourceAuthError
from carbon.live.http import Clock, HttpClient, Sleep
from carbon.live.series import Point, Series, hourly_means, parse_time, usable
from carbon.live.settings import WattTimeSettings

__all__ = ["LBS_PER_MWH_TO_G_PER_KWH", "SignalIndex", "WattTimeSource"]

PROVIDER = "watttime"
SOURCE_NAME = "watttime:moer"
SIGNAL = "co2_moer"
# 1 lb = 453.59237 g (exact, by definition); 1 MWh = 1000 kWh.
LBS_PER_MWH_TO_G_PER_KWH = 453.59237 / 1000.0
# Units the API reports, and the factor to gCO2/kWh (kg/MWh is numerically g/kWh).
_UNIT_FACTORS = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH, "kg_co2_per_mwh": 1.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalIndex:
    """Where the current MOER sits in the region's recent range (0 cleanest, 100 dirtiest)."""

    zone: str
    region: str
    at: datetime
    percentile: float


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class WattTimeSource(LiveSource):
    """Marginal (MOER) CO2 intensity from WattTime: history, forecast and signal index."""

    name: str = SOURCE_NAME
    # Its own basis: a chain on an average basis refuses it (`carbon.basis`).
    bases: frozenset[Basis] = frozenset({"marginal"})
    basis: Basis = "marginal"

    def __init__(
        self,
        settings: WattTimeSettings,
        *,
        session: aiohttp.ClientSession,
        clock: Clock = utc_now,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        password = settings.password()
        basic = aiohttp.encode_basic_auth(settings.username, password.get_secret_value())
        http = HttpClient(
            provider=PROVIDER,
            settings=settings,
            session=session,
            clock=clock,
            sleep=sleep,
            rng=rng,
            secrets=(password, SecretStr(basic.partition(" ")[2])),
        )
        super().__init__(http=http, settings=settings, clock=clock)
        self._basic = SecretStr(basic)
        self._regions = dict(settings.regions)
        self._horizon = settings.forecast_horizon_hours
        self._token_ttl = timedelta(seconds=settings.token_ttl_s)
        self._token: SecretStr | None = None
        self._token_at: datetime | None = None
        self._login_lock = asyncio.Lock()

    def _knows(self, zone: str) -> bool:
        return zone in self._regions

    # ---- auth ---------------------------------------------------------------------------

    async def _bearer(self, *, rejected: str | None = None) -> str:
        """A valid token: the cached one unless it is old or is the one just `rejected`."""
        async with self._login_lock:
            now = self._clock()
            token, since = self._token, self._token_at
            if (
                token is None
                or since is None
                or now - since >= self._token_ttl
                or token.get_secret_value() == rejected
            ):
                token = await self._login()
                self._token, self._token_at = token, now
            return token.get_secret_value()

    async def _login(self) -> SecretStr:
        body = await self._http.get_json(
            "/login", headers={"Authorization": self._basic.get_secret_value()}
        )
        value = body.get("token") if isinstance(body, Mapping) else None
        if not isinstance(value, str) or not value:
            raise BadResponse(f"{PROVIDER}: /login returned no token", provider=PROVIDER)
        token = SecretStr(value)
        self._http.add_secret(token)
        return token

    async def _get(self, path: str, params: Mapping[str, str]) -> Mapping[str, Any]:
        """GET with the bearer token; on a 401 log in once more and try again."""
        token = await self._bearer()
        try:
            return await self._get_with(path, params, token)
        except SourceAuthError as exc:
            if exc.status != 401:
                raise
        # Tokens expire (30 min) or are revoked: one fresh login, one more try.
        token = await self._bearer(rejected=token)
        return await self._get_with(path, params, token)

    async def _get_with(
        self, path: str, params: Mapping[str, str], token: str
    ) -> Mapping[str, Any]:
        body = await self._http.get_json(
            path, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        if not isinstance(body, Mapping):
            raise BadResponse(f"{PROVIDER}: {path} answered a non-object", provider=PROVIDER)
        return body

    # ---- data ---------------------------------------------------------------------------

    def _query(self, zone: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"region": self._regions[zone], "signal_type": SIGNAL, **(extra or {})}

    async def _past(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        params = self._query(zone, {"start": _stamp(start), "end": _stamp(end)})

        async def fetch() -> Series:
            return _moer_series(await self._get("/v3/historical", params), forecast=False)

        return await self._load(zone, "historical", params=params, fetch=fetch, offline=offline)

    async def _future(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        params = self._query(zone, {"horizon_hours": str(self._horizon)})

        async def fetch() -> Series:
            return _moer_series(await self._get("/v3/forecast", params), forecast=True)

        return await self._load(zone, "forecast", params=params, fetch=fetch, offline=offline)

    async def signal_index(self, zone: str) -> SignalIndex | None:
        """The current MOER percentile of the zone's region, or None for an unknown zone."""
        if not self._knows(zone):
            return None
        params = self._query(zone)

        async def fetch() -> Series:
            body = await self._get("/v3/signal-index", params)
            points = [_raw_point(item, factor=1.0, forecast=False) for item in _data(body)]
            return tuple(p for p in points if p is not None)[-1:]

        loaded = await self._load(zone, "signal-index", params=params, fetch=fetch, offline=False)
        if loaded is None or not loaded[0]:
            return None
        point = loaded[0][-1]
        return SignalIndex(
            zone=zone, region=self._regions[zone], at=point.at, percentile=point.value
        )


def _data(body: Mapping[str, Any]) -> list[Any]:
    items = body.get("data")
    if not isinstance(items, list):
        raise BadResponse(f"{PROVIDER}: the answer has no 'data' list", provider=PROVIDER)
    return items


def _raw_point(item: object, *, factor: float, forecast: bool) -> Point | None:
    if not isinstance(item, Mapping):
        return None
    at = parse_time(item.get("point_time"))
    value = usable(item.get("value"))
    if at is None or value is None:
        return None
    return Point(at=at, value=value * factor, forecast=forecast)


def _moer_series(body: Mapping[str, Any], *, forecast: bool) -> Series:
    """Hourly means in gCO2/kWh of a historical or forecast answer."""
    meta = body.get("meta")
    units = meta.get("units") if isinstance(meta, Mapping) else None
    factor = _UNIT_FACTORS.get(units) if isinstance(units, str) else None
    if factor is None:
        raise BadResponse(f"{PROVIDER}: unexpected units {units!r}", provider=PROVIDER)
    points = (_raw_point(item, factor=factor, forecast=forecast) for item in _data(body))
    return hourly_means(p for p in points if p is not None)
