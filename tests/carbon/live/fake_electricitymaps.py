"""A fake Electricity Maps API v3 speaking the documented shapes and error bodies.

Serves ``/v3/carbon-intensity/{latest,history,forecast}?zone=&emissionFactorType=`` with the
``auth-token`` header. Bodies follow the API reference and the samples of the aioelectricitymaps
test fixtures: ``{"zone", "carbonIntensity", "datetime", "updatedAt", "createdAt",
"emissionFactorType", "isEstimated", "estimationMethod"}``, history as ``{"zone", "history":
[...]}`` (the last 24 hours up to the current one, the newest two estimated), forecast as
``{"zone", "forecast": [{"carbonIntensity", "datetime"}], "updatedAt"}`` (24 hours from the
current one). Errors: 401 ``{"error": "Invalid auth-token", "message": ...}`` with the two
documented messages (missing header, unknown token); 404 for a zone it does not serve, in the
same ``{"error", "message"}`` envelope (its exact wording is not in the public docs).

Intensity of a zone at hour h: base + 3 * h.hour (lifecycle); direct factors are 80 % of that;
forecasts add FORECAST_BIAS so a test can tell which endpoint an hour came from.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from tests.carbon.live.fake_common import FakeApi, VirtualClock, json_reply

TOKEN = "em-test-token-9f2c"
FORECAST_BIAS = 0.5  # forecasts are off by this much, so tests can tell them from history
H = timedelta(hours=1)
_MISSING = (
    "Please provide a valid authentication header. See "
    "https://portal.electricitymaps.com/docs/getting-started#authorization for details"
)
_INVALID = (
    "The provided token is invalid. If this token used to work, please visit "
    "https://help.electricitymaps.com to get support"
)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


_FACTORS = frozenset({"lifecycle", "direct"})


class FakeElectricityMaps(FakeApi):
    def __init__(
        self,
        clock: VirtualClock,
        *,
        zones: dict[str, float] | None = None,
        token: str = TOKEN,
    ) -> None:
        super().__init__(clock)
        self.zones = zones if zones is not None else {"DE": 300.0, "FR": 40.0}
        self.token = token
        self.answer_zone: str | None = None  # set to answer for another zone than asked

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        app.router.add_get("/v3/carbon-intensity/latest", self.latest)
        app.router.add_get("/v3/carbon-intensity/history", self.history)
        app.router.add_get("/v3/carbon-intensity/forecast", self.forecast)
        return app

    def value(self, zone: str, hour: datetime, factor: str) -> float:
        lifecycle = self.zones[zone] + 3.0 * hour.hour
        return lifecycle if factor == "lifecycle" else round(lifecycle * 0.8, 2)

    def _refuse(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("auth-token")
        if token is None:
            return json_reply({"error": "Invalid auth-token", "message": _MISSING}, 401)
        if token != self.token:
            return json_reply({"error": "Invalid auth-token", "message": _INVALID}, 401)
        factor = request.query.get("emissionFactorType", "lifecycle")
        if factor not in _FACTORS:  # the API's two emission factor types, as documented
            return json_reply(
                {"error": "Bad request", "message": f"Invalid emissionFactorType '{factor}'"}, 400
            )
        zone = request.query.get("zone", "")
        if zone not in self.zones:
            return json_reply(
                {"error": "Zone not found", "message": f"Zone '{zone}' does not exist"}, 404
            )
        return None

    def _item(self, request: web.Request, hour: datetime, *, estimated: bool) -> dict[str, object]:
        zone = request.query["zone"]
        factor = request.query.get("emissionFactorType", "lifecycle")
        return {
            "zone": self.answer_zone or zone,
            "carbonIntensity": self.value(zone, hour, factor),
            "datetime": stamp(hour),
            "updatedAt": stamp(self.now()),
            "createdAt": stamp(hour - 72 * H),
            "emissionFactorType": factor,
            "isEstimated": estimated,
            "estimationMethod": "TIME_SLICER_AVERAGE" if estimated else None,
        }

    def _now_hour(self) -> datetime:
        return self.now().replace(minute=0, second=0, microsecond=0)

    async def latest(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return json_reply(self._item(request, self._now_hour(), estimated=True))

    async def history(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        first = self._now_hour() - 23 * H
        items = [self._item(request, first + i * H, estimated=i >= 22) for i in range(24)]
        return json_reply({"zone": self.answer_zone or request.query["zone"], "history": items})

    async def forecast(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        zone = request.query["zone"]
        factor = request.query.get("emissionFactorType", "lifecycle")
        now_hour = self._now_hour()
        points = [
            {
                "carbonIntensity": self.value(zone, now_hour + i * H, factor) + FORECAST_BIAS,
                "datetime": stamp(now_hour + i * H),
            }
            for i in range(24)
        ]
        return json_reply(
            {
                "zone": self.answer_zone or zone,
                "forecast": points,
                "updatedAt": stamp(self.now()),
            }
        )
