"""Compute Engine errors to connector errors, in one place.

Errors reach us two ways: as an HTTP error of the call itself (google.api_core raises a
`GoogleAPICallError` whose `errors` are the `error.errors[]` of the Google error body), or
inside a finished zone operation (`Operation.error.errors[].code`, with
`httpErrorStatusCode`), which is how an insert usually reports a stock-out
(https://cloud.google.com/compute/docs/troubleshooting/troubleshooting-resource-availability).

* stock-out, machine type not offered, or quota exceeded -> `CapacityUnavailable` (the
  caller tries the next zone and names the quota in the reason);
* 401, and 403 other than rate limits -> `AuthFailed`;
* 429, 5xx, rate-limit 403s, timeouts, connection errors -> `TransientError`;
* 404 -> `NotFound`, 409 -> `Conflict`; anything else (a 400: a bad image or network
  setting) -> `ConnectorError`, which no retry will fix.

Messages carry Google's message and reason codes only, never request headers, and
google-auth's refresh errors are reduced to their OAuth error code. Google's message is
still the provider's text: one that repeats the bearer token or a line of the key must not
carry it into a health reason, a log or the API, so it passes through the shared redactor
(the key and every token minted from it are registered in `client.py`) and is then capped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.errors import (
    AuthFailed,
    CapacityUnavailable,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
)
from redaction import cap, redact

if TYPE_CHECKING:
    from google.cloud import compute_v1

STOCKOUT = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "UNSUPPORTED_OPERATION",  # e.g. the machine type or GPU is not offered in this zone
    }
)
QUOTA = frozenset({"QUOTA_EXCEEDED", "quotaExceeded"})
RATE_LIMITED = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
MAX_MESSAGE = 300


def _by_status(status: int, message: str, *, site: str) -> ConnectorError:
    if status == 401:
        return AuthFailed(f"credentials rejected: {message}", site=site)
    if status == 403:
        return AuthFailed(f"permission denied: {message}", site=site)
    if status == 404:
        return NotFound(message, site=site)
    if status == 409:
        return Conflict(message, site=site)
    if status in (408, 429) or status >= 500:
        return TransientError(message, site=site)
    return ConnectorError(message, site=site)


def _classify(
    codes: list[str], status: int, message: str, *, site: str, what: str
) -> ConnectorError:
    message = redact(message)  # the codes and quota names too: all of it is the provider's
    if STOCKOUT & set(codes):
        return CapacityUnavailable(f"{what}: {message}", site=site)
    if QUOTA & set(codes):
        return CapacityUnavailable(f"{what}: quota exceeded: {message}", site=site)
    if RATE_LIMITED & set(codes):
        return TransientError(f"{what}: rate limited: {message}", site=site)
    return _by_status(status, f"{what}: {message}", site=site)


def translate(exc: BaseException, *, site: str, what: str) -> ConnectorError | None:
    """The connector error for a provider failure, or None if `exc` is not one (a bug)."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, api.GoogleAPICallError):
        codes = [str(e.get("reason", "")) for e in exc.errors if isinstance(e, dict)]
        if exc.reason:
            codes.append(exc.reason)
        status = int(exc.code) if exc.code is not None else 0
        # Capped before the reason codes are added: the hints and callers read the codes.
        detail = cap(redact(exc.message), MAX_MESSAGE) if exc.message else type(exc).__name__
        if codes:
            detail = f"{detail} ({', '.join(c for c in codes if c)})"
        return _classify(codes, status, detail, site=site, what=what)
    if isinstance(exc, auth.RefreshError):
        code = cap(redact(_oauth_error(exc)), 80)
        return AuthFailed(f"{what}: credentials rejected ({code})", site=site)
    if isinstance(exc, auth.TransportError):
        return TransientError(f"{what}: cannot reach the token endpoint", site=site)
    if isinstance(exc, auth.DefaultCredentialsError):
        return AuthFailed(f"{what}: no usable credentials ({type(exc).__name__})", site=site)
    if isinstance(exc, TimeoutError | ConnectionError):
        return TransientError(f"{what}: {type(exc).__name__}", site=site)
    if isinstance(exc, OSError):  # requests' ConnectionError and Timeout are OSErrors
        return TransientError(f"{what}: connection failed ({type(exc).__name__})", site=site)
    return None


def _oauth_error(exc: Exception) -> str:
    """The OAuth error code of a refresh failure ("invalid_grant"), nothing else of the body."""
    for arg in exc.args[1:]:
        if isinstance(arg, dict) and isinstance(arg.get("error"), str):
            return str(arg["error"])
    head = exc.args[0] if exc.args else ""
    if isinstance(head, str) and ":" in head:
        code = head.split(":", 1)[0].strip()
        if code.replace("_", "").isalpha():
            return code
    return type(exc).__name__


def operation_error(op: compute_v1.Operation, *, site: str, what: str) -> ConnectorError | None:
    """The error of a finished operation, None if it succeeded."""
    errors = list(op.error.errors) if op.error else []
    if not errors:
        return None
    codes = [e.code for e in errors]
    message = "; ".join(f"{e.code}: {cap(redact(e.message), MAX_MESSAGE)}" for e in errors)
    quota = _quota_names(errors)
    if quota:
        message = f"{message} [{', '.join(quota)}]"
    return _classify(codes, int(op.http_error_status_code or 0), message, site=site, what=what)


def _quota_names(errors: Any) -> list[str]:
    """Quota metric names from `errorDetails[].quotaInfo`, when the API sent them."""
    names = []
    for e in errors:
        for detail in e.error_details:
            info = detail.quota_info
            if info and info.metric_name:
                names.append(f"{info.metric_name} limit {info.limit:g}")
    return names
