"""Bearer tokens: configured only as salted SHA-256 hashes, each bound to a tenant and role.

API tokens are long random strings (see `broker token new`), so a fast salted hash is
enough; a slow password KDF would add milliseconds to every request for no gain. Tokens are
compared in constant time and never logged: only the token's configured name is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from aiohttp import web

from broker.api.problems import ApiProblem
from broker.config import TokenSettings
from broker.domain.enums import Role
from broker.domain.tenancy import Principal

SCHEME = "sha256"


def new_token() -> str:
    return "brk_" + secrets.token_urlsafe(32)


def hash_token(token: str, *, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(16)
    digest = hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()
    return f"{SCHEME}${salt}${digest}"


class TokenVerifier:
    def __init__(self, tokens: Sequence[TokenSettings]) -> None:
        self._entries = []
        for t in tokens:
            _, salt, digest = t.hash.split("$")
            self._entries.append((bytes.fromhex(salt), bytes.fromhex(digest), t))

    def verify(self, token: str) -> Principal | None:
        raw = token.encode()
        found: TokenSettings | None = None
        for salt, digest, entry in self._entries:  # no early exit: constant work per call
            if hmac.compare_digest(hashlib.sha256(salt + raw).digest(), digest):
                found = entry
        if found is None:
            return None
        return Principal(tenant=found.tenant, role=found.role, token_name=found.name)


def unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        status=401,
        slug="unauthorized",
        title="Authentication required",
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer realm="broker"'},
    )


def authenticate(request: web.Request, verifier: TokenVerifier) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise unauthorized("send Authorization: Bearer <token>")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    token = token.strip()
    # aiohttp keeps a header's non-UTF-8 bytes as lone surrogates, which `str.encode` (in
    # `verify`) refuses; tokens are printable ASCII, so anything else is simply not one.
    if not (token.isascii() and token.isprintable()):
        raise unauthorized("the token is not valid")
    principal = verifier.verify(token)
    if principal is None:
        raise unauthorized("the token is not valid")
    return principal


def require(principal: Principal, role: Role) -> None:
    if not principal.role.at_least(role):
        raise ApiProblem(
            status=403,
            slug="forbidden",
            title="Forbidden",
            detail=f"this needs the {role.value} role",
        )
