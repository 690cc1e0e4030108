"""The connector interface every kind of site implements.

A connector owns one site. The broker calls it to read inventory, dispatch a placed job,
cancel or preempt it, and (for clouds) to provision and release capacity; the connector
reports what its jobs do as a stream of `StatusUpdate`s. What a connector cannot do it
declares in `lacks`, and the broker checks that before it plans (skypilot's pattern).

A connector is built from its own site's settings and a `BuildContext` (the config folder
its relative paths resolve against, the SDK thread pool, the clock, the simulator's pace),
never from the broker's whole settings tree: what it may read is what it is given.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Self

from broker.domain.clock import Clock
from broker.domain.enums import Ability, JobState, SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from broker.domain.runs import RunBook
from connectors.errors import ConnectorError, Unsupported
from connectors.settings import SimSettings, SiteSettings
from connectors.threads import Blocking

__all__ = [
    "Ability",
    "BuildContext",
    "CheckItem",
    "CloudInstance",
    "Connector",
    "InstanceState",
    "SiteInventory",
    "StatusUpdate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildContext:
    """What every connector is built with besides its own site's settings."""

    # The config file's folder: relative paths in `connector:` start here (`config_dir / p`
    # keeps an absolute `p` as it is).
    config_dir: Path
    blocking: Blocking  # the bounded pool for sync SDK calls; its owner shuts it down
    clock: Clock
    sim: SimSettings = field(default_factory=SimSettings)  # read only by the sim connector
    # where the sim connector keeps its runs so every replica sees them; None: in memory
    runs: RunBook | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteInventory:
    site: Site
    pools: tuple[GpuPool, ...]


class InstanceState(enum.StrEnum):
    """A cloud instance's life, mapped from each provider's states through a table."""

    PENDING = "pending"  # asked for, not yet able to run work
    RUNNING = "running"
    STOPPING = "stopping"  # shutting down or being deleted
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudInstance:
    """One broker-owned cloud instance (found again by its ownership tag or label)."""

    id: str
    pool_id: str
    gpu_model: str
    gpus: int
    zone: str
    spot: bool
    state: InstanceState
    launched_at: datetime | None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckItem:
    """One thing `check` verified: that credentials resolve, that a needed call is allowed."""

    name: str
    ok: bool
    detail: str  # what was seen or went wrong; never a secret


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """A job's new state as the site sees it: running, succeeded or failed."""

    job_id: str
    state: JobState
    at: datetime
    reason: str
    detail: str = ""
    # The run (`Placement.run`) it is about, so the broker drops an update from an earlier
    # run of the same job; None where the site cannot tell (applied to the current run).
    run: str | None = None


class Connector(abc.ABC):
    kind: ClassVar[SiteKind]
    lacks: ClassVar[frozenset[Ability]] = frozenset()

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, *, site: SiteSettings, context: BuildContext) -> Self:
        """Build the connector for one configured site; validates, opens no connection."""

    @property
    @abc.abstractmethod
    def site_name(self) -> str:
        """The name of the site this connector drives."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open clients and start following the site."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop following and release clients; pending work on the site is left running."""

    @abc.abstractmethod
    async def inventory(self) -> SiteInventory:
        """The site's health and its GPU pools (capacity; the broker keeps the ledger)."""

    @abc.abstractmethod
    async def dispatch(self, *, job: Job, placement: Placement) -> str:
        """Start a placed job; returns the site's id for it. Retrying must not duplicate."""

    @abc.abstractmethod
    async def cancel(self, *, job_id: str, external_id: str | None, reason: str) -> None:
        """Stop a job (cancel or preempt); a job that is already gone is not an error."""

    @abc.abstractmethod
    async def adopt(self, *, job: Job, placement: Placement) -> None:
        """Resume following a job the site may still be running (after a restart, or when
        this replica takes the site over); report it gone if the site no longer has it."""

    @abc.abstractmethod
    def updates(self) -> AsyncIterator[StatusUpdate]:
        """The stream of status changes of this site's jobs, until `close`.

        Iterating is following: the connector watches the site only while someone iterates
        (the replica holding the site's follow lease), and stops when the iteration ends.
        Each update names its run where the site can tell (`StatusUpdate.run`).
        """

    def supports(self, ability: Ability) -> bool:
        return ability not in self.lacks

    def credentials(self) -> str:
        """How this connector authenticates, by reference (a profile name, a key file's path,
        a kubeconfig context): shown to operators, so never a secret value."""
        return "none"

    async def check(self) -> tuple[CheckItem, ...]:
        """Verify the configured credentials and the calls the broker needs (`broker check`).

        Never raises for a provider answer: a rejected credential is a failed item.
        """
        try:
            inv = await self.inventory()
        except ConnectorError as exc:
            return (CheckItem(name="inventory", ok=False, detail=str(exc)),)
        return (CheckItem(name="inventory", ok=True, detail=f"{len(inv.pools)} GPU pools"),)

    async def owned(self) -> dict[str, str]:
        """Jobs this broker dispatched that still exist at the site: job id → external id."""
        return {}

    async def provision(
        self, *, gpu_model: str, count: int, spot: bool, request_id: str
    ) -> list[CloudInstance]:
        """Start `count` instances with `gpu_model`; retrying with the same `request_id`
        returns the same instances instead of starting more. Raises `CapacityUnavailable`
        (with every zone tried) when no zone has room."""
        raise Unsupported("this site cannot provision capacity", site=self.site_name)

    async def release(self, *, instance_ids: list[str]) -> None:
        """Terminate instances; ones already gone are not an error."""
        raise Unsupported("this site cannot release capacity", site=self.site_name)

    async def instances(self) -> list[CloudInstance]:
        """The broker-owned instances alive at the provider, found by ownership tag/label."""
        raise Unsupported("this site has no instances of its own", site=self.site_name)
