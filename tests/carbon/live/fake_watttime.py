"""A fake WattTime API v3: basic-auth login, bearer tokens, MOER data in lbs/MWh.

* ``GET /login`` checks HTTP basic auth and answers ``{"token": ...}`` (a new token each time);
  wrong credentials get 401.
* ``GET /v3/historical?region=&start=&end=&signal_type=co2_moer`` - five-minute points in
  [start, end), none after now;
* ``GET /v3/forecast?region=&signal_type=co2_moer&horizon_hours=`` - five-minute points from
  now (floored to 5 minutes) for the horizon;
* ``GET /v3/signal-index?region=&signal_type=co2_moer`` - one point, the percentile.

Bodies: ``{"data": [{"point_time", "value", "version"}], "meta": {"region", "signal_type",
"model": {"date"}, "units", "data_point_period_seconds", "warnings", ...}}`` as in the docs and
the aiowatttime fixtures. Errors: 401 for a missing or expired token (`expire_tokens()`), 403
``{"error": "Invalid query parameters", "message": "Invalid scope. ..."}`` for a region the
account's plan lacks, 400 for a region that does not exist.

MOER at instant t: base + t.minute lbs/MWh, so one hour's mean is base + 27.5.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from aiohttp import web

from tests.carbon.live.fake_common import FakeApi, VirtualClock, json_reply

USERNAME = "broker-bot"
PASSWORD = "wt-test-password-51e0"
STEP = timedelta(minutes=5)
SCOPE_MESSAGE = (
    "Invalid scope. You do not have sufficient access to this resource. See "
    "https://api.watttime.org/plans/ for more information or email contact@watttime.org for "
    "pricing. Please note that all users are allowed free access to CAISO_NORTH."
)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def floor5(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


class FakeWattTime(FakeApi):
    def __init__(
        self,
        clock: VirtualClock,
        *,
        regions: dict[str, float] | None = None,
        not_in_plan: frozenset[str] = frozenset({"PJM_ROANOKE"}),
    ) -> None:
        super().__init__(clock)
        self.regions = regions if regions is not None else {"CAISO_NORTH": 900.0}
        self.not_in_plan = not_in_plan
        self.tokens: set[str] = set()
        self.logins = 0
        self.percentile = 53.0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        app.router.add_get("/login", self.login)
        app.router.add_get("/v3/historical", self.historical)
        app.router.add_get("/v3/forecast", self.forecast)
        app.router.add_get("/v3/signal-index", self.signal_index)
        return app

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as they do after 30 minutes)."""
        self.tokens.clear()

    def moer(self, region: str, at: datetime) -> float:
        return self.regions[region] + at.minute

    async def login(self, request: web.Request) -> web.Response:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(encoded, validate=True).decode() if scheme == "Basic" else ""
        except ValueError:
            given = ""
        if given != f"{USERNAME}:{PASSWORD}":
            return json_reply({"error": "Unauthorized"}, 401)
        self.logins += 1
        token = f"wt-token-{self.logins}-7c1d"
        self.tokens.add(token)
        return json_reply({"token": token})

    def _refuse(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header.removeprefix("Bearer ") not in self.tokens:
            return json_reply({"error": "Unauthorized", "message": "token invalid or expired"}, 401)
        region = request.query.get("region", "")
        if request.query.get("signal_type") != "co2_moer":
            return json_reply({"error": "Invalid query parameters"}, 400)
        if region in self.not_in_plan:
            return json_reply({"error": "Invalid query parameters", "message": SCOPE_MESSAGE}, 403)
        if region not in self.regions:
            return json_reply({"error": "Invalid query parameters", "message": "bad region"}, 400)
        return None

    def _body(self, region: str, points: list[dict[str, object]], units: str) -> dict[str, object]:
        return {
            "data": points,
            "meta": {
                "region": region,
                "signal_type": "co2_moer",
                "model": {"date": "2024-10-01"},
                "units": units,
                "data_point_period_seconds": 300,
                "generated_at_period_seconds": 300,
                "generated_at": stamp(floor5(self.now())),
                "warnings": [],
            },
        }

    def _points(self, region: str, start: datetime, end: datetime) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        at = floor5(start) if floor5(start) == start else floor5(start) + STEP
        while at < end:
            out.append({"point_time": stamp(at), "value": self.moer(region, at), "version": "3.2"})
            at += STEP
        return out

    async def historical(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        region = request.query["region"]
        start = datetime.fromisoformat(request.query["start"])
        end = min(datetime.fromisoformat(request.query["end"]), self.now() + timedelta(seconds=1))
        return json_reply(self._body(region, self._points(region, start, end), "lbs_co2_per_mwh"))

    async def forecast(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        region = request.query["region"]
        start = floor5(self.now())
        hours = int(request.query.get("horizon_hours", "24"))
        points = self._points(region, start, start + timedelta(hours=hours))
        return json_reply(self._body(region, points, "lbs_co2_per_mwh"))

    async def signal_index(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        point = {"point_time": stamp(floor5(self.now())), "value": self.percentile}
        return json_reply(self._body(request.query["region"], [point], "percentile"))
