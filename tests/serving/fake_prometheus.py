"""A small Prometheus HTTP API server for tests: `GET /api/v1/query` answered from a table.

Answers are the real shapes (https://prometheus.io/docs/prometheus/latest/querying/api/):
success with an instant vector or a scalar, errors with `errorType`/`error` and a 4xx/5xx
status; a query can also be made slow (to time out) or answer non-JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakePrometheus:
    answers: dict[str, Any] = field(default_factory=dict)  # query -> value or callable
    token: str | None = None
    requests: list[dict[str, str]] = field(default_factory=list)
    server: TestServer | None = None

    def vector(self, query: str, *values: float) -> None:
        self.answers[query] = (
            200,
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"instance": f"i{i}"}, "value": [1_700_000_000.0, str(v)]}
                        for i, v in enumerate(values)
                    ],
                },
            },
        )

    def scalar(self, query: str, value: float) -> None:
        self.answers[query] = (
            200,
            {"status": "success", "data": {"resultType": "scalar", "result": [0, str(value)]}},
        )

    def error(self, query: str, status: int, kind: str, message: str) -> None:
        self.answers[query] = (status, {"status": "error", "errorType": kind, "error": message})

    async def _query(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {"status": "error", "errorType": "unauthorized", "error": "bad token"},
                status=401,
            )
        answer = self.answers.get(request.query.get("query", ""))
        if answer is None:
            return web.json_response(
                {"status": "success", "data": {"resultType": "vector", "result": []}}
            )
        status, body = answer
        if body == "not json":
            return web.Response(text="<html>proxy error</html>", status=status)
        return web.json_response(body, status=status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/query", self._query)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
