"""The one path from the engine's decisions to committed placements and runs on the sites.

Both the scheduling loop and the burst claim (new burst capacity goes first to the jobs it
was bought for) hand their decisions here, so a decision is applied the same way whoever
made it: the placements without victims and the deferrals are committed in one batch
(`Store.place_many`/`defer_many`, one transaction), each preempting placement alone with
its victims (`Store.place`); a `Wait` leaves the job queued. A decision whose commit finds
the world changed (another replica, a cancel) is dropped and the job is looked at again
next pass (`Applied.stale`). Dispatch to the site happens after the commit and the sites'
ids of a batch are written in one go; a dispatch the site refuses sends the job back to
pending with its allocation released, and an auth failure marks the site's health.
Transitions, waits and preemptions are counted in the metrics on every path.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from broker.db.repository import Deferral, Store
from broker.domain.clock import Clock
from broker.domain.engine import Decision, Defer, Place, Wait
from broker.domain.enums import Health, JobState
from broker.domain.jobs import Job, Placement
from broker.domain.placement import Candidate
from broker.metrics import Metrics
from connectors.base import Connector
from connectors.errors import AuthFailed, ConnectorError

log = logging.getLogger(__name__)

DISPATCH_CONCURRENCY = 8  # dispatches in flight at once from one batch

# Records the footprint of a run that ended (job, its placement, the outcome).
Account = Callable[[Job, Placement, str], Awaitable[None]]


@dataclass(slots=True)
class Applied:
    """What applying one list of decisions did."""

    placed: list[str] = field(default_factory=list)  # job ids committed
    dispatched: list[str] = field(default_factory=list)  # of those, the ones a site accepted
    waiting: list[str] = field(default_factory=list)  # job ids the engine left queued
    stale: bool = False  # a commit found the world changed: re-read before the next pass


async def _no_accounting(job: Job, placement: Placement, outcome: str) -> None:
    return None


class Applier:
    def __init__(
        self,
        *,
        store: Store,
        connectors: Mapping[str, Connector],
        clock: Clock,
        metrics: Metrics,
        account: Account = _no_accounting,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._clock = clock
        self._metrics = metrics
        self._account = account

    async def apply(self, decisions: Sequence[Decision], *, reason: str = "placed") -> Applied:
        """Apply `decisions` in the engine's order; `reason` is the placed transition's."""
        out = Applied()
        batch: list[Place | Defer] = []
        for decision in decisions:
            if isinstance(decision, Wait):
                out.waiting.append(decision.job.id)
            elif isinstance(decision, Place) and decision.victims:
                # what the engine decided before this preemption is committed before it
                await self._commit_batch(batch, reason=reason, out=out)
                batch = []
                await self._apply_preempting(decision, reason=reason, out=out)
            else:
                batch.append(decision)
        await self._commit_batch(batch, reason=reason, out=out)
        return out

    async def _commit_batch(
        self, batch: Sequence[Place | Defer], *, reason: str, out: Applied
    ) -> None:
        """Commit decisions without victims together, then dispatch."""
        defers = [d for d in batch if isinstance(d, Defer)]
        if defers:
            deferred = await self._store.defer_many(
                [Deferral(job_id=d.job.id, until=d.until, reason=d.reason) for d in defers]
            )
            self._metrics.transitions.labels(state=JobState.DEFERRED.value).inc(sum(deferred))
        places = [d for d in batch if isinstance(d, Place)]
        if not places:
            return
        placements = [self._placement(d.job, d.candidate, borrowed=d.borrowed) for d in places]
        done = await self._store.place_many(placements, reason=reason)
        placed = [(d.job, p) for d, p, ok in zip(places, placements, done, strict=True) if ok]
        if len(placed) < len(places):
            out.stale = True
        for job, placement in placed:
            self._count_placed(job, placement)
        out.placed += [job.id for job, _ in placed]
        out.dispatched += await self.dispatch_all(placed)

    async def _apply_preempting(self, decision: Place, *, reason: str, out: Applied) -> None:
        """Preempt the victims and place the job in one transaction."""
        job, victims = decision.job, decision.victims
        placement = self._placement(job, decision.candidate, borrowed=decision.borrowed)
        released = await self._store.place(
            job=job,
            placement=placement,
            reason=reason,
            preempt=victims.job_ids if victims else (),
            preempt_reason=f"for {job.spec.tier.value} job {job.id}: {victims.reason}"
            if victims
            else "",
        )
        if released is None:
            out.stale = True
            return
        for victim in released:
            self._metrics.preemptions.inc()
            await self.stop(victim, reason="preempted")
            await self._account((await self._store.get_job(victim.job_id)).job, victim, "preempted")
        self._count_placed(job, placement)
        out.placed.append(job.id)
        out.dispatched += await self.dispatch_all([(job, placement)])

    def _count_placed(self, job: Job, placement: Placement) -> None:
        self._metrics.transitions.labels(state=JobState.SCHEDULED.value).inc()
        self._metrics.wait_seconds.labels(tier=job.spec.tier.value).observe(
            max(0.0, (placement.created_at - job.created_at).total_seconds())
        )

    def _placement(self, job: Job, best: Candidate, *, borrowed: bool) -> Placement:
        return Placement(
            job_id=job.id,
            site=best.site,
            pool_id=best.pool_id,
            gpu_milli=best.gpu_milli,
            price_per_gpu_hour=best.price_per_gpu_hour,
            spot=best.spot,
            estimated_cost_usd=best.cost_usd,
            estimated_gco2=best.gco2,
            created_at=self._clock.now(),
            node_names=best.node_names,
            node_gpus=best.node_gpus,
            cpu_milli=job.spec.resources.demand.cpu_milli,
            memory_mb=job.spec.resources.demand.memory_mb,
            borrowed=borrowed,
            run=uuid.uuid4().hex[:16],  # names this run in the site's status updates
        )

    async def dispatch_all(self, placed: Sequence[tuple[Job, Placement]]) -> list[str]:
        """Hand each committed job to its site, then record the sites' ids in one write;
        returns the ids of the jobs the sites accepted."""
        external_ids: dict[str, str] = {}
        gate = asyncio.Semaphore(DISPATCH_CONCURRENCY)

        async def send(job: Job, placement: Placement) -> None:
            async with gate:
                external_id = await self._dispatch(job, placement)
            if external_id is not None:
                external_ids[job.id] = external_id

        try:
            # Concurrently (a site's API or the run book answer in a round trip each),
            # bounded so a large batch does not open a connection per job at once.
            results = await asyncio.gather(
                *(send(job, placement) for job, placement in placed), return_exceptions=True
            )
        finally:  # the jobs a site accepted keep their ids, whatever happened to others
            await self._store.set_external_ids(external_ids)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [job.id for job, _ in placed if job.id in external_ids]

    async def _dispatch(self, job: Job, placement: Placement) -> str | None:
        """The site's id for the job, or None if the site refused it (then it is requeued)."""
        connector = self._connectors[placement.site]
        try:
            return await connector.dispatch(job=job, placement=placement)
        except ConnectorError as exc:
            log.warning("dispatch of %s to %s failed: %s", job.id, placement.site, exc)
            if isinstance(exc, AuthFailed):
                await self._store.set_site_health(placement.site, Health.AUTH_FAILED, str(exc))
            await self._store.finish(
                job.id, state=JobState.PENDING, reason="dispatch_failed", detail=str(exc)
            )
            return None

    async def stop(self, placement: Placement, *, reason: str) -> None:
        """Stop a job on its site after the database let go of it (cancel or preempt)."""
        connector = self._connectors.get(placement.site)
        if connector is None:
            return
        try:
            await connector.cancel(
                job_id=placement.job_id, external_id=placement.external_id, reason=reason
            )
        except ConnectorError as exc:
            log.warning(
                "site %s did not confirm stopping %s: %s", placement.site, placement.job_id, exc
            )
