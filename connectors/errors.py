"""Errors a connector may raise; provider errors are translated into these at the boundary.

BrokerError
└── ConnectorError
    ├── CapacityUnavailable   no capacity where it was tried (carries `tried`)
    ├── AuthFailed            credentials rejected: stop retrying, mark the site
    ├── TransientError        throttled or flaky: retry with backoff and jitter
    ├── NotFound              the remote object is gone
    ├── Conflict              the remote object exists in another state
    └── Unsupported           the connector lacks this ability
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.domain.errors import BrokerError


class ConnectorError(BrokerError):
    def __init__(self, message: str, *, site: str) -> None:
        super().__init__(f"{site}: {message}")
        self.site = site


class CapacityUnavailable(ConnectorError):
    def __init__(self, message: str, *, site: str, tried: Sequence[str] = ()) -> None:
        super().__init__(message, site=site)
        self.tried = tuple(tried)


class AuthFailed(ConnectorError):
    pass


class TransientError(ConnectorError):
    pass


class NotFound(ConnectorError):
    pass


class Conflict(ConnectorError):
    pass


class Unsupported(ConnectorError):
    pass
