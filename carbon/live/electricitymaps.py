"""Electricity Maps API v3 as a CarbonSource (https://static.electricitymaps.com/api/docs/).

Endpoints used, all ``GET`` with the key in the ``auth-token`` header and
``emissionFactorType`` for the deployment's basis (``carbon.basis``: lifecycle ->
``lifecycle``, operational -> ``direct``), so the source serves either basis:

* ``/carbon-intensity/latest?zone=``   -> ``{"zone", "carbonIntensity", "datetime",
  "updatedAt", "createdAt", "emissionFactorType", "isEstimated", "estimationMethod"}``
* ``/carbon-intensity/history?zone=``  -> ``{"zone", "history": [<as latest>...]}``, the
  last 24 hours (older hours are unknown to this source)
* ``/carbon-intensity/forecast?zone=`` -> ``{"zone", "forecast": [{"carbonIntensity",
  "datetime"}...], "updatedAt"}``

Values are consumption-based (flow-traced) average intensities in gCO2eq/kWh, already
hourly. ``isEstimated`` or an ``estimationMethod`` marks a reading ``estimated``; forecast
points are ``forecast``. Errors: 401 ``{"error": "Invalid auth-token", "message": ...}`` and
403 become `SourceAuthError`; 404 (no such zone) becomes None / [].

The API may answer for another zone than asked (it falls back to the caller's location when
it cannot resolve one), so a body whose ``zone`` differs from the request is treated as
"zone unknown" rather than passed off as the asked zone's data.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from carbon.basis import Basis, DeploymentBasis
from carbon.live.base import LiveSource, Loaded, utc_now
from carbon.live.errors import BadResponse, ZoneUnknown
from carbon.live.http import Clock, HttpClient, Sleep
from carbon.live.series import Point, Series, hourly_means, parse_time, usable
from carbon.live.settings import ElectricityMapsSettings

__all__ = ["ElectricityMapsSource"]

PROVIDER = "electricitymaps"


class ElectricityMapsSource(LiveSource):
    """Carbon intensity from Electricity Maps (latest, last 24 h, forecast)."""

    name: str = PROVIDER
    bases: frozenset[Basis] = frozenset({"operational", "lifecycle"})

    def __init__(
        self,
        settings: ElectricityMapsSettings,
        *,
        session: aiohttp.ClientSession,
        basis: DeploymentBasis | None = None,
        clock: Clock = utc_now,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        key = settings.api_key()
        http = HttpClient(
            provider=PROVIDER,
            settings=settings,
            session=session,
            clock=clock,
            sleep=sleep,
            rng=rng,
            secrets=(key,),
        )
        super().__init__(http=http, settings=settings, clock=clock)
        self._key = key
        if basis is None:  # the settings' own factor type, else the API default
            basis = "operational" if settings.emission_factor_type == "direct" else "lifecycle"
        self.basis = basis
        self._factor = "direct" if basis == "operational" else "lifecycle"

    async def _get(self, endpoint: str, zone: str) -> Mapping[str, Any]:
        path = f"/carbon-intensity/{endpoint}"
        try:
            body = await self._http.get_json(
                path,
                params={"zone": zone, "emissionFactorType": self._factor},
                headers={"auth-token": self._key.get_secret_value()},
            )
        except BadResponse as exc:
            if exc.status == 404:
                raise ZoneUnknown(str(exc), provider=PROVIDER, status=404) from None
            raise
        if not isinstance(body, Mapping):
            raise BadResponse(f"{PROVIDER}: {path} answered a non-object", provider=PROVIDER)
        answered = body.get("zone")
        if answered is not None and answered != zone:
            raise ZoneUnknown(
                f"{PROVIDER}: asked for zone {zone}, answered for {answered}", provider=PROVIDER
            )
        return body

    async def _latest(self, zone: str, *, offline: bool) -> Loaded | None:
        async def fetch() -> Series:
            point = _point(await self._get("latest", zone), forecast=False)
            return () if point is None else (point,)

        return await self._load(zone, "latest", params={}, fetch=fetch, offline=offline)

    async def _past(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        async def fetch() -> Series:
            return _series(await self._get("history", zone), "history", forecast=False)

        return await self._load(zone, "history", params={}, fetch=fetch, offline=offline)

    async def _future(
        self, zone: str, *, start: datetime, end: datetime, offline: bool
    ) -> Loaded | None:
        async def fetch() -> Series:
            return _series(await self._get("forecast", zone), "forecast", forecast=True)

        return await self._load(zone, "forecast", params={}, fetch=fetch, offline=offline)


def _point(item: object, *, forecast: bool) -> Point | None:
    """One documented carbon-intensity object as a point; None when it has no usable value."""
    if not isinstance(item, Mapping):
        return None
    at = parse_time(item.get("datetime"))
    value = usable(item.get("carbonIntensity"))
    if at is None or value is None:
        return None
    estimated = bool(item.get("isEstimated")) or bool(item.get("estimationMethod"))
    return Point(at=at, value=value, forecast=forecast, estimated=estimated)


def _series(body: Mapping[str, Any], field: str, *, forecast: bool) -> Series:
    items = body.get(field)
    if not isinstance(items, list):
        raise BadResponse(f"{PROVIDER}: the answer has no {field!r} list", provider=PROVIDER)
    points = (_point(item, forecast=forecast) for item in items)
    return hourly_means(p for p in points if p is not None)
