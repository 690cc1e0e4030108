"""A fake GB Carbon Intensity API (no key), half-hourly, in the documented shapes.

National: ``/intensity`` (the current half-hour), ``/intensity/{from}/fw48h`` (96 half-hours
from `from`) and ``/intensity/{from}/{to}``, each ``{"data": [{"from", "to", "intensity":
{"forecast", "actual", "index"}}]}`` with ``actual`` set for half-hours that ended before now
and null otherwise. Regional: ``/regional/regionid/{id}`` -> ``{"data": [{"regionid",
"dnoregion", "shortname", "data": [period]}]}`` and ``/regional/intensity/{from}/fw48h/regionid/
{id}`` or ``.../{from}/{to}/regionid/{id}`` -> ``{"data": {"regionid", ..., "data": [periods]}}``,
forecast only, with a ``generationmix``. Errors: 400 ``{"error": {"code": "400 Bad Request",
"message": ...}}`` for a region id outside 1-17 or a malformed datetime (the API's wording).

Values: national forecast 200 + n for the n-th half-hour of the UTC day, actual 10 below it;
regional forecast 100 + region id + n.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from tests.carbon.live.fake_common import FakeApi, VirtualClock, json_reply

HALF = timedelta(minutes=30)
BAD_REGION = "Please enter a valid region ID i.e. 1-17."
BAD_DATE = (
    "Please enter a valid datetime in ISO8601 format YYYY-MM-DDThh:mmZ "
    "e.g. /intensity/2017-08-25T15:30Z"
)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def floor30(moment: datetime) -> datetime:
    return moment.replace(minute=moment.minute - moment.minute % 30, second=0, microsecond=0)


def index_of_day(at: datetime) -> int:
    return at.hour * 2 + at.minute // 30


def bad_request(message: str) -> web.Response:
    return json_reply({"error": {"code": "400 Bad Request", "message": message}}, 400)


class FakeUK(FakeApi):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        add = app.router.add_get
        add("/intensity", self.national_now)
        add("/intensity/{start}/fw48h", self.national_fw48h)
        add("/intensity/{start}/{end}", self.national_range)
        add("/regional/regionid/{rid}", self.regional_now)
        add("/regional/intensity/{start}/fw48h/regionid/{rid}", self.regional_fw48h)
        add("/regional/intensity/{start}/{end}/regionid/{rid}", self.regional_range)
        return app

    def national(self, at: datetime) -> dict[str, object]:
        forecast = 200 + index_of_day(at)
        ended = at + HALF <= self.now()
        index = "moderate" if forecast < 260 else "high"
        return {
            "from": stamp(at),
            "to": stamp(at + HALF),
            "intensity": {
                "forecast": forecast,
                "actual": forecast - 10 if ended else None,
                "index": index,
            },
        }

    def regional(self, at: datetime, rid: int) -> dict[str, object]:
        return {
            "from": stamp(at),
            "to": stamp(at + HALF),
            "intensity": {"forecast": 100 + rid + index_of_day(at), "index": "low"},
            "generationmix": [{"fuel": "gas", "perc": 30.5}, {"fuel": "wind", "perc": 69.5}],
        }

    def _region(self, rid: int) -> dict[str, object]:
        return {"regionid": rid, "dnoregion": f"DNO {rid}", "shortname": f"Region {rid}"}

    @staticmethod
    def _time(text: str) -> datetime | None:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None

    @staticmethod
    def _rid(request: web.Request) -> int | None:
        text = request.match_info["rid"]
        return int(text) if text.isdigit() and 1 <= int(text) <= 17 else None

    def _span(self, start: datetime, end: datetime) -> list[datetime]:
        out, at = [], floor30(start)
        while at < end:
            out.append(at)
            at += HALF
        return out

    def _window(self, request: web.Request, *, fw48h: bool) -> list[datetime] | web.Response:
        start = self._time(request.match_info["start"])
        end = None if fw48h else self._time(request.match_info["end"])
        if start is None or (not fw48h and end is None):
            return bad_request(BAD_DATE)
        return self._span(start, start + 96 * HALF if end is None else end)

    async def national_now(self, request: web.Request) -> web.Response:
        return json_reply({"data": [self.national(floor30(self.now()))]})

    async def national_fw48h(self, request: web.Request) -> web.Response:
        return self._national(request, fw48h=True)

    async def national_range(self, request: web.Request) -> web.Response:
        return self._national(request, fw48h=False)

    def _national(self, request: web.Request, *, fw48h: bool) -> web.Response:
        span = self._window(request, fw48h=fw48h)
        if isinstance(span, web.Response):
            return span
        return json_reply({"data": [self.national(at) for at in span]})

    async def regional_now(self, request: web.Request) -> web.Response:
        rid = self._rid(request)
        if rid is None:
            return bad_request(BAD_REGION)
        region = {**self._region(rid), "data": [self.regional(floor30(self.now()), rid)]}
        return json_reply({"data": [region]})

    async def regional_fw48h(self, request: web.Request) -> web.Response:
        return self._regional(request, fw48h=True)

    async def regional_range(self, request: web.Request) -> web.Response:
        return self._regional(request, fw48h=False)

    def _regional(self, request: web.Request, *, fw48h: bool) -> web.Response:
        rid = self._rid(request)
        if rid is None:
            return bad_request(BAD_REGION)
        span = self._window(request, fw48h=fw48h)
        if isinstance(span, web.Response):
            return span
        region = {**self._region(rid), "data": [self.regional(at, rid) for at in span]}
        return json_reply({"data": region})
