"""Each site followed by one replica at a time, taken over when that replica dies.

Every replica runs a `Leased` per configured site on the lease `follow:<site>`. The holder
reconciles the site on taking it (`broker.scheduling.reconcile`: adopts every placement on
it, dispatches what a dead replica committed but never dispatched, stops runs whose jobs
let go), then iterates the connector's `updates()`, which starts the connector's watch,
and applies each update; it resyncs every `resync_s`. A replica that dies stops renewing,
so a survivor takes the site over within `lease_s + renew_s` and adopts its orphans:
following a job no longer depends on which replica dispatched it. Were two replicas ever to
follow one site at once, each update names its run and is applied by compare-and-set, so a
duplicate changes nothing.

Dispatch, cancel and preemption need no lease: any replica reaches the site directly (a
Kubernetes API call; the simulator's shared run book), and the follower sees the result.
"""

from __future__ import annotations

from broker.db.leases import Leases
from broker.scheduling.leased import Leased, lease_name
from broker.scheduling.loop import SchedulingLoop
from broker.scheduling.reconcile import reconcile_site
from broker.scheduling.settings import FollowSettings
from connectors.base import Connector


def site_follow(
    *,
    site: str,
    connector: Connector,
    loop: SchedulingLoop,
    leases: Leases,
    holder: str,
    settings: FollowSettings,
) -> Leased:
    """Follow `site` from this replica while it holds the site's lease."""

    async def reconcile(resync_s: float | None) -> None:
        await reconcile_site(
            site=site,
            connector=connector,
            store=loop.store,
            applier=loop.applier,
            now=loop.clock.now(),
            resync_s=resync_s,
        )

    async def take() -> None:
        await reconcile(None)

    async def resync() -> None:
        await reconcile(settings.resync_s)

    return Leased(
        name=lease_name("follow", site),
        what=f"following site {site}",
        leases=leases,
        holder=holder,
        clock=loop.clock,
        lease_s=settings.lease_s,
        renew_s=settings.renew_s,
        body=lambda: loop.follow(connector),
        take=take,
        every=resync,
        every_s=settings.resync_s,
    )
