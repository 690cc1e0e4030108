"""Per-request values set by middleware."""

from __future__ import annotations

from aiohttp import web

from broker.domain.tenancy import Principal

_PRINCIPAL = "broker.principal"


def set_principal(request: web.Request, principal: Principal) -> None:
    request[_PRINCIPAL] = principal


def principal(request: web.Request) -> Principal:
    value = request.get(_PRINCIPAL)
    if not isinstance(value, Principal):  # a route outside /v1 asked: a wiring bug
        raise RuntimeError("no authenticated principal on this request")
    return value
