"""What each connector's tests provide so the shared contract suite can drive any connector.

Every connector folder (`tests/connectors/<kind>/`) defines a `harness` fixture that yields a
`Harness`: a started connector pointed at that provider's fake (a wire-speaking HTTP server
or moto), plus hooks that change the fake's state the way the real provider would. The
contract suite (`tests/connectors/contract.py`) only talks to the connector's public
interface and these hooks, so one set of tests holds every connector to the same behaviour.
"""

from __future__ import annotations

from typing import Protocol

from broker.domain.jobs import Job, Placement
from connectors.base import Connector


class Harness(Protocol):
    connector: Connector
    # A value the fake accepts as a credential (a key, a token, a key file's private key);
    # the contract suite checks it never appears in errors, logs or results.
    secret: str

    async def placement(self, job: Job) -> Placement:
        """A placement of `job` on one of the connector's inventory pools (node 0)."""
        ...

    async def remote_ids(self) -> set[str]:
        """External ids of the broker-owned objects alive at the provider right now:
        Kubernetes Jobs for a cluster, running/pending instances for a cloud."""
        ...

    async def finish(self, external_id: str, *, succeeded: bool) -> None:
        """Make the provider report the dispatched job as finished (connectors that FOLLOW)."""
        ...

    def reject_credentials(self) -> None:
        """From now on the fake answers every call as the provider does for revoked credentials."""
        ...

    def throttle(self, calls: int) -> None:
        """The next `calls` provider calls answer as the provider does when throttling."""
        ...
