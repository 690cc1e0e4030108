"""Kubernetes client errors → connector errors, at the boundary.

The API server answers failures with a `Status` object
(https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/); the
client raises `ApiException` carrying it, and urllib3 errors for a broken connection.
Messages are built here from the status code, the operation and the Status `message`,
never from `str(ApiException)` (it dumps headers and body) and never from the kubeconfig.
A 401 says no more than "unauthorized". The Status `message` is the server's (or a
proxy's) text and may repeat what the client sent, so it passes through the shared
redactor (`redaction`; `client.py` registers the credentials) before it is cut to length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connectors.errors import (
    AuthFailed,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
)
from redaction import cap, redact

MAX_MESSAGE = 300


class Expired(ConnectorError):
    """410 Gone: a watch's (or continue token's) resourceVersion is too old; list again.

    Not a TransientError: repeating the same request cannot succeed, the caller re-lists.
    """


class Rejected(ConnectorError):
    """The API server refused the request as invalid (400, 422): a bug or an impossible job."""


@dataclass(frozen=True, slots=True)
class Op:
    """What a call does, for error messages: `verb` `resource` (in `namespace`)."""

    verb: str
    resource: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.resource}{where}"


def status_message(body: Any) -> str:
    """The `message` of a Status body, or "" when the body is not a Status."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(status, dict):
        return ""
    return cap(redact(str(status.get("message", ""))), MAX_MESSAGE)


def from_api_exception(exc: Any, *, op: Op, site: str) -> ConnectorError:
    """Translate a kubernetes.client ApiException (any status) into a connector error."""
    code = int(getattr(exc, "status", 0) or 0)
    detail = status_message(getattr(exc, "body", None))
    suffix = f": {detail}" if detail else ""
    if code == 401:
        return AuthFailed(
            f"unauthorized: the API server rejected the credentials ({op})", site=site
        )
    if code == 403:
        return AuthFailed(f"forbidden: the credentials lack permission for {op}", site=site)
    if code == 404:
        return NotFound(f"{op}: not found{suffix}", site=site)
    if code == 409:
        return Conflict(f"{op}: conflict{suffix}", site=site)
    if code == 410:
        return Expired(f"{op}: resource version expired{suffix}", site=site)
    if code == 429 or code >= 500:
        headers = getattr(exc, "headers", None) or {}
        retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
        hint = f" (retry after {retry_after}s)" if retry_after else ""
        return TransientError(f"{op}: API server answered {code}{hint}{suffix}", site=site)
    if code == 0:
        # The client raises status 0 for TLS errors; only a handshake cut short is transient.
        reason = str(getattr(exc, "reason", "") or "")
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate" in reason.lower():
            return AuthFailed(f"{op}: the API server's TLS certificate is not trusted", site=site)
        return TransientError(f"{op}: TLS error talking to the API server", site=site)
    return Rejected(f"{op}: API server answered {code}{suffix}", site=site)


def from_connection_error(exc: BaseException, *, op: Op, site: str, host: str) -> TransientError:
    """A urllib3 or socket error: the API server is unreachable or the connection dropped."""
    return TransientError(
        f"{op}: cannot reach the API server at {host} ({type(exc).__name__})", site=site
    )
