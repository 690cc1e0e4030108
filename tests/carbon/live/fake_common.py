"""What every fake provider server shares: a request log and scripted failures.

Each fake is an aiohttp `web.Application` serving the provider's documented JSON shapes. A
middleware records every request (path, query, headers) before anything else, so tests can
assert auth headers and parameters, then answers a scripted response if one is queued for the
path (429 with Retry-After, 503, ...), or the canned `down` response while the fake is down.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class VirtualClock:
    """An injected clock the tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased


@dataclass
class Reply:
    """A canned response: JSON `body` (or plain `text`), status and headers."""

    status: int
    body: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        if self.text is not None:
            return web.Response(status=self.status, text=self.text, headers=self.headers)
        return web.Response(
            status=self.status,
            text=json.dumps(self.body if self.body is not None else {}),
            content_type="application/json",
            headers=self.headers,
        )


class FakeApi:
    """Request log, per-path scripted replies and an outage switch."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.requests: list[Recorded] = []
        self.down: Reply | None = None
        self._script: list[tuple[str, Reply]] = []

    def script(self, path_prefix: str, *replies: Reply) -> None:
        """Answer the next requests under `path_prefix` with `replies`, in order."""
        self._script.extend((path_prefix, reply) for reply in replies)

    def hits(self, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(
            Recorded(
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
            )
        )
        if self.down is not None:
            return self.down.response()
        for index, (prefix, reply) in enumerate(self._script):
            if request.path.startswith(prefix):
                del self._script[index]
                return reply.response()
        return await handler(request)

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)


def json_reply(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
