"""The broker's one error root and the domain-level errors.

Connector errors (capacity, auth, transient) derive from the same root in
`connectors.errors`; the API maps every `BrokerError` to a problem document, so no
exception reaches a client as a traceback.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""


class ConfigError(BrokerError):
    """The configuration file is missing, malformed or invalid (also a site's `connector:`)."""


class InvalidTransition(BrokerError):
    def __init__(self, *, job_id: str, src: str, dst: str) -> None:
        super().__init__(f"job {job_id} cannot go from {src} to {dst}")
        self.job_id = job_id
        self.src = src
        self.dst = dst


class ConcurrentUpdate(BrokerError):
    """Another writer changed the row between our read and our write; re-read and retry."""


class UnknownGpuModel(BrokerError):
    def __init__(self, model: str) -> None:
        super().__init__(f"unknown GPU model {model!r}")
        self.model = model


class JobNotFound(BrokerError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class IdempotencyConflict(BrokerError):
    """An Idempotency-Key was reused with a different request body."""

    def __init__(self, *, key: str, job_id: str) -> None:
        super().__init__("this Idempotency-Key was already used with a different request")
        self.key = key
        self.job_id = job_id


class JobAlreadyFinished(BrokerError):
    def __init__(self, *, job_id: str, state: str) -> None:
        super().__init__(f"job {job_id} already finished ({state})")
        self.job_id = job_id
        self.state = state


class ServiceNotFound(BrokerError):
    def __init__(self, service_id: str) -> None:
        super().__init__(f"no service {service_id}")
        self.service_id = service_id


class ServiceDeleted(BrokerError):
    """A change to a service that is being (or has been) deleted."""

    def __init__(self, service_id: str) -> None:
        super().__init__(f"service {service_id} is being deleted")
        self.service_id = service_id
