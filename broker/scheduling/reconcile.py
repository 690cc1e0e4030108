"""Settling a site with the database: what the replica following a site does when it takes
the site over (at start-up, or from a replica that died) and every `resync_s` after.

The database is the source of truth for what holds GPUs; the site for what runs. On taking
a site over, the follower adopts every placement on it (the connector resumes following
each run: reads the Job, or puts the simulated run back in the book), dispatches the
placements committed but never dispatched (their dispatcher died between the two; dispatch
is idempotent, so racing a live dispatcher is harmless), and stops the runs the site still
has for jobs that no longer hold an allocation (a preemption or cancel whose stop was lost).
A resync does the same for what went missing since: a placement whose run the site no
longer lists is adopted (the connector reports it gone or puts it back), an undispatched
placement older than one resync is dispatched.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from broker.db.repository import Store
from broker.domain.enums import JobState
from broker.domain.errors import JobNotFound
from broker.domain.jobs import Job, Placement
from broker.scheduling.apply import Applier
from connectors.base import Connector
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)


async def reconcile_site(
    *,
    site: str,
    connector: Connector,
    store: Store,
    applier: Applier,
    now: datetime,
    resync_s: float | None = None,
) -> None:
    """Take over `site` (`resync_s` None) or resync it (`resync_s`: the resync interval)."""
    try:
        owned: dict[str, str] | None = await connector.owned()  # before reading placements:
    except ConnectorError as exc:  # a run listed here was committed before it was listed
        log.warning("site %s: cannot list its jobs to reconcile: %s", site, exc)
        owned = None
    active = await store.active_placements(site=site)
    undispatched: list[tuple[Job, Placement]] = []
    for job, placement in active:
        if job.state is JobState.SCHEDULED and placement.external_id is None:
            if resync_s is None or now - placement.created_at > timedelta(seconds=resync_s):
                undispatched.append((job, placement))  # its dispatcher died after the commit
        elif resync_s is None or (owned is not None and job.id not in owned):
            try:
                await connector.adopt(job=job, placement=placement)
            except ConnectorError as exc:
                log.warning("site %s: cannot adopt job %s: %s", site, job.id, exc)
    if undispatched:
        log.info("site %s: dispatching %d committed placements", site, len(undispatched))
        await applier.dispatch_all(undispatched)
    if owned is not None:
        await _settle_orphans(
            site=site,
            connector=connector,
            store=store,
            owned=owned,
            held={job.id for job, _ in active},
        )


async def _settle_orphans(
    *, site: str, connector: Connector, store: Store, owned: dict[str, str], held: set[str]
) -> None:
    """Runs the site has for this broker that hold no allocation here: stop the ones whose
    broker job has ended or went back to the queue (a preemption or cancel whose stop was
    lost; a later dispatch must not adopt the stale run), and leave running, with a
    warning, the ones the database has never heard of: deleting them could lose work."""
    for job_id, external_id in sorted(owned.items()):
        if job_id in held:
            continue
        try:
            state = (await store.get_job(job_id)).job.state
        except JobNotFound:
            log.warning(
                "site %s runs %s for job %s, which this broker has no record of; left running",
                site,
                external_id,
                job_id,
            )
            continue
        if state in (JobState.SCHEDULED, JobState.RUNNING):
            continue  # placed since the placements were read
        log.info("site %s: stopping %s, job %s is %s", site, external_id, job_id, state)
        try:
            await connector.cancel(
                job_id=job_id, external_id=external_id, reason=f"reconcile: {state}"
            )
        except ConnectorError as exc:
            log.warning("site %s: cannot stop %s: %s", site, external_id, exc)
