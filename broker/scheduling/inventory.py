"""The sites as the broker drives them: their inventory, health and connectors' abilities.

`refresh_inventory` re-reads every site's GPU pools and health from its connector into the
store, at start-up and then on a schedule, so capacity that joins a
cluster (burst nodes once Ready) or leaves it (reclaimed, cordoned) reaches the engine. A
site that cannot be read is marked, with the reason the connector gave; its ledger is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from broker.db.repository import Store
from broker.domain.enums import Ability, Health
from broker.domain.fleet import Site
from connectors.base import Connector, SiteInventory
from connectors.errors import AuthFailed, ConnectorError

log = logging.getLogger(__name__)


Visible = Callable[[SiteInventory], Awaitable[SiteInventory]]


async def refresh_inventory(
    *, store: Store, connectors: Mapping[str, Connector], visible: Visible | None = None
) -> str:
    """Sync each site; returns a one-line summary ("5 sites: 4 read, 1 unreachable").

    `visible` filters an inventory before it reaches the ledger: the burster's, which
    holds back burst nodes until it hands them to the jobs they were bought for and drops
    nodes of released instances that still linger in the cluster."""
    names = list(connectors)
    results = await asyncio.gather(
        *(connectors[n].inventory() for n in names), return_exceptions=True
    )
    read, failed = 0, []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, SiteInventory):
            inv = result if visible is None else await visible(result)
            await store.sync_site(inv.site, inv.pools)
            read += 1
        elif isinstance(result, ConnectorError):
            health = Health.AUTH_FAILED if isinstance(result, AuthFailed) else Health.UNREACHABLE
            log.warning("site %s: inventory failed: %s", name, result)
            await store.set_site_health(name, health, str(result))
            failed.append(f"{name} {health.value}")
        elif isinstance(result, BaseException):
            raise result
    summary = f"{len(names)} site(s): {read} read"
    return summary + (f", {', '.join(failed)}" if failed else "")


def lacks(connector: Connector) -> frozenset[Ability]:
    """The abilities a site's connector declares it lacks, as the engine sees them."""
    return frozenset(a for a in Ability if not connector.supports(a))


async def driven_sites(store: Store, connectors: Mapping[str, Connector]) -> list[Site]:
    """The stored sites a connector drives, each with the abilities its connector lacks."""
    return [
        replace(s, lacks=lacks(connectors[s.name]))
        for s in await store.sites()
        if s.name in connectors
    ]
