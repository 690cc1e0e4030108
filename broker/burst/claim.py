"""New burst capacity goes first to the jobs it was bought for.

When a burst's nodes join their cluster, the burster records the new capacity in the
ledger and at once runs the scheduling engine over just those jobs and just that site
(`Engine.plan`, so quotas, fairness and placement rules are the scheduler's own), and
applies the placements it proposes through the scheduling loop's own `Applier` (commit,
dispatch, health marking, requeue, metrics: `broker.scheduling.apply`). The loop runs on
its own and may still take some of the room between the two steps; the ledger's
conditional writes make sure nothing is handed out twice, and a job that lost the race is
simply placed by the loop later. Decisions that need preemption or a deferral are left to
the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from broker.db.repository import Store
from broker.domain.clock import Clock
from broker.domain.engine import Engine, Place
from broker.domain.enums import JobState
from broker.domain.errors import JobNotFound
from broker.domain.jobs import Job
from broker.domain.latency import LatencyMatrix
from broker.scheduling.apply import Applier
from broker.scheduling.conditions import read_hourly
from broker.scheduling.inventory import lacks
from carbon.base import CarbonSource
from connectors.base import Connector

REASON = "placed_on_burst"


async def claim(
    job_ids: Sequence[str],
    *,
    connector: Connector,
    store: Store,
    engine: Engine,
    applier: Applier,
    latency: LatencyMatrix,
    carbon: CarbonSource,
    clock: Clock,
) -> list[str]:
    """Place and dispatch the still-pending `job_ids` on the connector's site; returns the
    ids the site accepted."""
    jobs = await _pending(job_ids, store=store)
    if not jobs:
        return []
    site_name = connector.site_name
    site = next((s for s in await store.sites() if s.name == site_name), None)
    if site is None:
        return []
    site = replace(site, lacks=lacks(connector))
    now = clock.now()
    table = await read_hourly(
        carbon, [site.grid_zone], start=now, hours=engine.settings.deferral_horizon_h
    )
    decisions = engine.plan(
        queue=jobs,
        pools=[p for p in await store.pools() if p.site == site_name],
        running=await store.running_work(),
        sites=[site],
        latency=latency,
        carbon=table,
        now=now,
    )
    places = [d for d in decisions if isinstance(d, Place) and d.victims is None]
    applied = await applier.apply(places, reason=REASON)
    return applied.dispatched


async def _pending(job_ids: Sequence[str], *, store: Store) -> list[Job]:
    jobs = []
    for job_id in job_ids:
        try:
            job = (await store.get_job(job_id)).job
        except JobNotFound:
            continue
        if job.state is JobState.PENDING:
            jobs.append(job)
    return jobs
