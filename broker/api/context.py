"""Per-request values set by middleware."""

from __future__ import annotations

from aiohttp import web

from broker.domain.tenancy import Principal

_PRINCIPAL = web.RequestKey("principal", Principal)


def set_principal(request: web.Request, principal: Principal) -> None:
    request[_PRINCIPAL] = principal


def principal(request: web.Request) -> Principal:
    try:
        return request[_PRINCIPAL]
    except KeyError:  # a route outside /v1 asked: a wiring bug, not a client error
        raise RuntimeError("no authenticated principal on this request") from None
