"""Service-account keys and Google's two ways of accepting them, for the fake Compute server.

A test key is a real RSA key in a real service-account JSON file whose `token_uri` is the
fake's `/token`. The fake then accepts what Google accepts:

* at `/token`, an OAuth 2.0 JWT-bearer grant (RFC 7523) signed by the key, answered with an
  access token (google-auth's `Credentials.refresh`; the connector's `check()` uses it);
* on the API, `Authorization: Bearer <token>` where the token is one it issued, or a
  self-signed JWT with a `scope` claim signed by the key (https://google.aip.dev/auth/4111),
  which is what the compute clients send: they always enable `always_use_jwt_access`.

Signatures are verified with `cryptography` here, independently of google-auth.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # google-auth's grant `aud`
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@cache
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    """RSA keys are slow to make; tests share a few (slot 0: the site's, 1: a stranger's)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class ServiceAccountKey:
    email: str
    key_id: str
    private_key_pem: str
    public_key: rsa.RSAPublicKey

    @classmethod
    def generate(cls, *, email: str, slot: int = 0) -> ServiceAccountKey:
        key = _rsa_key(slot)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cls(
            email=email,
            key_id=secrets.token_hex(20),
            private_key_pem=pem,
            public_key=key.public_key(),
        )

    def json_file(self, path: Path, *, token_uri: str, project: str) -> Path:
        """Write the key as Google's service-account JSON key file."""
        info = {
            "type": "service_account",
            "project_id": project,
            "private_key_id": self.key_id,
            "private_key": self.private_key_pem,
            "client_email": self.email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }
        path.write_text(json.dumps(info), encoding="utf-8")
        return path

    @property
    def key_body_lines(self) -> list[str]:
        """The base64 lines of the PEM: none may leak, not just the whole block."""
        return [line for line in self.private_key_pem.splitlines() if "-----" not in line]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class InvalidJwt(Exception):
    pass


def verify_jwt(token: str, keys: dict[str, ServiceAccountKey]) -> dict[str, Any]:
    """The claims of an RS256 JWT signed by one of `keys` (by `kid`); raises InvalidJwt."""
    try:
        head_b64, body_b64, sig_b64 = token.split(".")
        header = json.loads(_b64decode(head_b64))
        claims: dict[str, Any] = json.loads(_b64decode(body_b64))
        signature = _b64decode(sig_b64)
    except ValueError as exc:
        raise InvalidJwt("malformed JWT") from exc
    if header.get("alg") != "RS256":
        raise InvalidJwt("unsupported algorithm")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise InvalidJwt("unknown key id")
    try:
        key.public_key.verify(
            signature, f"{head_b64}.{body_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature as exc:
        raise InvalidJwt("bad signature") from exc
    now = time.time()
    if claims.get("iss") != key.email:
        raise InvalidJwt("issuer is not the key's service account")
    if not float(claims.get("iat", 0)) - 300 <= now < float(claims.get("exp", 0)):
        raise InvalidJwt("expired or not yet valid")
    return claims


@dataclass
class FakeAuth:
    """Keys the fake knows, tokens it issued, and whether credentials are revoked."""

    keys: dict[str, ServiceAccountKey] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> email
    revoked: bool = False
    grants: int = 0  # successful /token grants
    seen: list[str] = field(default_factory=list)  # "token" or "jwt" per authorised API call
    bearers: set[str] = field(default_factory=set)  # every bearer credential presented

    def register(self, key: ServiceAccountKey) -> None:
        self.keys[key.key_id] = key

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a token request like Google's OAuth endpoint."""
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form:
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant"}
        try:
            claims = verify_jwt(form["assertion"], self.keys)
        except InvalidJwt:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if self.revoked:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or CLOUD_PLATFORM not in str(
            claims.get("scope", "")
        ):
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope."}
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = str(claims["iss"])
        self.grants += 1
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def caller(self, authorization: str | None) -> str | None:
        """The service account behind an API call's Authorization header, None if invalid."""
        if self.revoked or not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ")
        self.bearers.add(token)
        if token in self.tokens:
            self.seen.append("token")
            return self.tokens[token]
        try:
            claims = verify_jwt(token, self.keys)
        except InvalidJwt:
            return None
        if CLOUD_PLATFORM not in str(claims.get("scope", "")):
            return None
        self.seen.append("jwt")
        return str(claims["iss"])
