"""Errors of the live carbon sources, translated at the HTTP boundary.

The hierarchy (httpx-style, one root, documented here)::

    SourceError                 anything a live source could not do
    ├── SourceAuthError         401/403 or missing credentials: stop, retrying cannot help
    ├── SourceUnavailable       429/5xx/connection/timeout, still failing after the retries
    ├── BadResponse             a 2xx body that is not the documented shape, or another 4xx
    └── ZoneUnknown             the provider says it has no such zone

`ZoneUnknown` never leaves a source's `current`/`forecast`: the CarbonSource protocol says
an unknown zone is None / an empty list, so the source turns it into that. The others do
leave, and `FallbackSource` moves on to the next source of the chain when it sees one.

Messages name the provider, the endpoint path and the provider's own error text (redacted of
any secret and truncated); they never hold an API key, token or password. Each error carries
what a caller needs to decide: `status` (the HTTP status, None for a network failure),
`attempts` (how many requests were made), `detail` (the provider's own error text, scrubbed)
and, when the provider said so, `retry_after`.
"""

from __future__ import annotations

__all__ = ["BadResponse", "SourceAuthError", "SourceError", "SourceUnavailable", "ZoneUnknown"]


class SourceError(Exception):
    """A live carbon source failed; the message is safe to log."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        attempts: int = 0,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.attempts = attempts
        self.retry_after = retry_after
        self.detail = detail


class SourceAuthError(SourceError):
    """The provider refused the credentials (401/403), or none could be read: do not retry."""


class SourceUnavailable(SourceError):
    """The provider could not be reached or kept failing (429/5xx/network) after the retries."""


class BadResponse(SourceError):
    """The provider answered, but not with anything this client understands."""


class ZoneUnknown(SourceError):
    """The provider does not know the zone (the source returns None / [] for it)."""
