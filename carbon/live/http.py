"""GET-and-decode-JSON over one injected aiohttp session, with retries, backoff and a rate limit.

The session is the caller's (Home Assistant's pattern: one `ClientSession` per application,
opened and closed in the app's cleanup context); this module never creates or closes one.

Each attempt first takes a token from the client-side rate limiter. Failures are sorted here,
at the boundary, into the errors of `errors.py`:

* 429 (and 408/425), 5xx, connection errors and timeouts are retried up to `max_attempts`
  times. The wait before the next attempt is the provider's ``Retry-After`` when it sent one
  (seconds or an HTTP date), else exponential backoff with full jitter (AWS architecture
  blog, "Exponential Backoff And Jitter"): uniform(0, min(backoff_max, backoff_base *
  2^(attempt-1))). A Retry-After beyond `retry_after_max_s` is not slept through: the call
  fails at once with `SourceUnavailable` carrying `retry_after`, so a fallback can answer.
* 401 and 403 raise `SourceAuthError` straight away; other 4xx raise `BadResponse`.

Error messages carry the provider's own error text (Electricity Maps and WattTime send
``{"error": ..., "message": ...}``, the GB API ``{"error": {"code": ..., "message": ...}}``),
passed through the shared redactor (`redaction`) and then cut to a few hundred characters.
Every secret the client is given, and every token obtained later (`add_secret`), is
registered with that redactor, which also cuts secret shapes (`Bearer …`, JWTs, `token=`).
Headers are never logged nor put into messages, since that is where the keys travel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from pydantic import SecretStr

from carbon.live.errors import BadResponse, SourceAuthError, SourceUnavailable
from carbon.live.ratelimit import TokenBucket, rate_from
from carbon.live.settings import LiveSourceSettings
from redaction import cap, redact, register

__all__ = ["Clock", "HttpClient", "Sleep", "parse_retry_after"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

_RETRY_STATUSES = frozenset({408, 425, 429})
_DETAIL_CHARS = 300


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _provider_detail(body: bytes) -> str:
    """The provider's error text from a JSON or plain body, redacted and shortened."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):  # the GB API nests code and message
            error = ": ".join(str(error[k]) for k in ("code", "message") if error.get(k))
        parts = [str(p) for p in (error, parsed.get("message")) if p]
        if parts:
            text = ": ".join(parts)
    return cap(redact(text), _DETAIL_CHARS)


class HttpClient:
    """JSON GETs against one provider's base URL, with its limits and retry policy."""

    def __init__(
        self,
        *,
        provider: str,
        settings: LiveSourceSettings,
        session: aiohttp.ClientSession,
        clock: Clock,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        secrets: Sequence[SecretStr] = (),
    ) -> None:
        self.provider = provider
        self._base = settings.base_url.rstrip("/")
        self._settings = settings
        self._session = session
        self._clock = clock
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._rng = rng if rng is not None else random.Random()
        for secret in secrets:
            register(secret.get_secret_value())
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout_s, connect=settings.connect_timeout_s
        )
        self._limiter = TokenBucket(
            rate=rate_from(
                per_second=settings.requests_per_second,
                per_minute=settings.requests_per_minute,
            ),
            burst=settings.burst,
            clock=lambda: self._clock().timestamp(),
            sleep=self._sleep,
        )

    def add_secret(self, secret: SecretStr) -> None:
        """Also redact this value (a bearer token obtained later) wherever it shows."""
        register(secret.get_secret_value(), ephemeral=True)

    def __repr__(self) -> str:
        return f"HttpClient(provider={self.provider!r}, base_url={self._base!r})"

    def _backoff(self, attempt: int) -> float:
        cap = min(self._settings.backoff_max_s, self._settings.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, cap)

    async def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body of GET base_url + path, after retries; raises SourceError."""
        attempts = self._settings.max_attempts
        last = "no attempt"
        detail = ""
        status: int | None = None
        for attempt in range(1, attempts + 1):
            await self._limiter.acquire()
            retry_after: float | None = None
            try:
                async with self._session.get(
                    self._base + path,
                    params=params,
                    headers=headers,
                    timeout=self._timeout,
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        return await self._decode(resp, path=path, attempt=attempt)
                    body = await resp.read()
                    retry_after = parse_retry_after(
                        resp.headers.get("Retry-After"), now=self._clock()
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = None
                detail = last = self._network_detail(exc)
                log.debug("%s GET %s: %s (attempt %d)", self.provider, path, last, attempt)
            else:
                detail = _provider_detail(body)
                last = f"HTTP {status}" + (f" ({detail})" if detail else "")
                log.debug("%s GET %s -> %s (attempt %d)", self.provider, path, status, attempt)
                if status in (401, 403):
                    raise SourceAuthError(
                        f"{self.provider}: {path} refused the credentials: {last}",
                        provider=self.provider,
                        status=status,
                        attempts=attempt,
                        detail=detail,
                    )
                if status < 500 and status not in _RETRY_STATUSES:
                    raise BadResponse(
                        f"{self.provider}: {path} rejected the request: {last}",
                        provider=self.provider,
                        status=status,
                        attempts=attempt,
                        detail=detail,
                    )
                if retry_after is not None and retry_after > self._settings.retry_after_max_s:
                    raise SourceUnavailable(
                        f"{self.provider}: {path} asked to retry after {retry_after:g}s "
                        f"(more than {self._settings.retry_after_max_s:g}s): {last}",
                        provider=self.provider,
                        status=status,
                        attempts=attempt,
                        retry_after=retry_after,
                        detail=detail,
                    )
            if attempt < attempts:
                await self._sleep(
                    retry_after if retry_after is not None else self._backoff(attempt)
                )
        raise SourceUnavailable(
            f"{self.provider}: {path} failed after {attempts} attempt(s), last: {last}",
            provider=self.provider,
            status=status,
            attempts=attempts,
            detail=detail,
        )

    def _network_detail(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"timeout after {self._settings.timeout_s:g}s"
        return _provider_detail(f"{type(exc).__name__}: {exc}".encode())

    async def _decode(self, resp: aiohttp.ClientResponse, *, path: str, attempt: int) -> Any:
        try:
            return await resp.json(content_type=None)
        except ValueError:
            raise BadResponse(
                f"{self.provider}: {path} answered {resp.status} with a body that is not JSON",
                provider=self.provider,
                status=resp.status,
                attempts=attempt,
            ) from None
