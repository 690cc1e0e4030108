"""The connector interface every kind of site implements.

A connector owns one site. The broker calls it to read inventory, dispatch a placed job,
cancel or preempt it, and (for clouds) to provision and release capacity; the connector
reports what its jobs do as a stream of `StatusUpdate`s. What a connector cannot do it
declares in `lacks`, and the broker checks that before it plans (skypilot's pattern).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Self

from broker.config import Settings, SiteSettings
from broker.domain.clock import Clock
from broker.domain.enums import JobState, SiteKind
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, Placement
from connectors.errors import Unsupported


class Ability(enum.StrEnum):
    DISPATCH = "dispatch"
    CANCEL = "cancel"
    FOLLOW = "follow"  # reports job status
    PROVISION = "provision"  # can add capacity (clouds)
    MIG = "mig"
    FRACTIONAL_GPU = "fractional_gpu"
    GANG = "gang"  # multi-node jobs, all nodes at once
    SPOT = "spot"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteInventory:
    site: Site
    pools: tuple[GpuPool, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """A job's new state as the site sees it: running, succeeded or failed."""

    job_id: str
    state: JobState
    at: datetime
    reason: str
    detail: str = ""


class Connector(abc.ABC):
    kind: ClassVar[SiteKind]
    lacks: ClassVar[frozenset[Ability]] = frozenset()

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, *, site: SiteSettings, settings: Settings, clock: Clock) -> Self:
        """Build the connector for one configured site."""

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
        """After a broker restart, resume following a job the site may still be running."""

    @abc.abstractmethod
    def updates(self) -> AsyncIterator[StatusUpdate]:
        """The stream of status changes of this site's jobs, until `close`."""

    def supports(self, ability: Ability) -> bool:
        return ability not in self.lacks

    async def provision(self, *, gpu_model: str, count: int, spot: bool) -> list[str]:
        raise Unsupported("this site cannot provision capacity", site=self.site_name)

    async def release(self, *, instance_ids: list[str]) -> None:
        raise Unsupported("this site cannot release capacity", site=self.site_name)
