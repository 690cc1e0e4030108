"""Admin routes: what the broker is configured with, never a secret."""

from __future__ import annotations

from aiohttp import web

from broker.api.auth import require
from broker.api.context import principal
from broker.api.keys import SETTINGS
from broker.api.schemas import TokenListOut, TokenOut
from broker.domain.enums import Role

routes = web.RouteTableDef()


@routes.get("/v1/admin/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    """The configured tokens by name, tenant and role; hashes stay in the config file."""
    require(principal(request), Role.ADMIN)
    tokens = request.app[SETTINGS].auth.tokens
    out = TokenListOut(
        items=[TokenOut(name=t.name, tenant=t.tenant, role=t.role.value) for t in tokens]
    )
    return web.json_response(text=out.model_dump_json())
