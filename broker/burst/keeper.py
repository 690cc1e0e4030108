"""Looking after burst capacity once it is asked for: joining, idling, releasing.

`Keeper.refresh` lists each target's instances and each joined cluster's ready nodes, and
applies what `broker.burst.reclaim.review` finds: nodes that joined (the burst is ready once
all its instances have), idle clocks started or stopped, instances the provider no longer
lists (recorded as released, with their cost). When nodes join, the joined site's capacity
is written to the ledger, keeping the site's recorded health (a booting node is not the
cluster's ill health), the jobs the burst was bought for are placed on it first
(`broker.burst.claim`), and `on_capacity` wakes the scheduling loop.

`Keeper.reclaim` releases what the review decides (idle past the TTL, never joined), and
instances the provider lists as the broker's that no burst recorded (a launch whose answer
was lost) once they have been seen for the join timeout; every release is recorded with
what the instances cost and emitted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from broker.burst.claim import claim
from broker.burst.joined import same_layout, visible_pools
from broker.burst.reclaim import InstanceKey, NodeSlot, Review, ledger_of, node_slots, review
from broker.burst.settings import BurstSettings
from broker.db.capacity import CapacityStore
from broker.db.repository import Store
from broker.domain.capacity import ActionKind, ActionState, BurstInstance, CapacityAction
from broker.domain.clock import Clock
from broker.domain.engine import Engine
from broker.domain.latency import LatencyMatrix
from broker.scheduling.apply import Applier
from carbon.base import CarbonSource
from connectors.base import CloudInstance, Connector, InstanceState, SiteInventory
from connectors.errors import ConnectorError

log = logging.getLogger(__name__)

RECENTLY = timedelta(days=2)  # released instances a provider or a cluster may still show


@dataclass(frozen=True, slots=True)
class Observed:
    review: Review
    inventories: Mapping[str, SiteInventory]  # joined site → its inventory as reported
    listed: Mapping[str, Mapping[str, CloudInstance]]  # provider → the instances it lists


class Keeper:
    def __init__(
        self,
        *,
        settings: BurstSettings,
        store: Store,
        capacity: CapacityStore,
        connectors: Mapping[str, Connector],
        engine: Engine,
        applier: Applier,
        latency: LatencyMatrix,
        carbon: CarbonSource,
        clock: Clock,
        needs: Callable[[datetime], Awaitable[dict[str, float]]],
        on_capacity: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._capacity = capacity
        self._connectors = connectors
        self._engine = engine
        self._applier = applier
        self._latency = latency
        self._carbon = carbon
        self._clock = clock
        self._needs = needs
        self._on_capacity = on_capacity
        self._joins = {t.provider: t.joins for t in settings.targets}
        self._strays: dict[InstanceKey, datetime] = {}  # unrecorded instances: first seen

    # -- refresh ----------------------------------------------------------------------

    async def refresh(self) -> str:
        now = self._clock.now()
        seen = await self.observe(now)
        rev = seen.review
        await self._capacity.mark_joined(rev.joined, at=now)
        await self._capacity.set_idle_since(rev.idle)
        notes = [f"{len(rev.joined)} joined"] if rev.joined else []
        if rev.gone:
            await self._record(rev.gone, now=now, detail="gone")
            notes.append(f"{len(rev.gone)} gone at the provider")
        alive = {
            (i.provider_site, i.instance_id): i for i in await self._capacity.alive_instances()
        }
        fresh: list[CapacityAction] = []
        for action in await self._capacity.open_actions():
            mine = [(action.provider_site, i) for i in action.instance_ids]
            if any(k in rev.joined for k in mine):
                fresh.append(action)
            still = [alive[k] for k in mine if k in alive]
            if (
                action.state is ActionState.REQUESTED
                and still
                and all(i.joined_at is not None for i in still)
            ):
                await self._capacity.mark_ready(action.id, at=now)
                notes.append(f"{action.id} ready")
        synced = await self.sync(seen.inventories, now=now, force=bool(rev.joined))
        placed: list[str] = []
        for action in fresh:
            connector = self._connectors.get(action.joins_site)
            if connector is not None and action.for_jobs:
                placed += await claim(
                    action.for_jobs,
                    connector=connector,
                    store=self._store,
                    engine=self._engine,
                    applier=self._applier,
                    latency=self._latency,
                    carbon=self._carbon,
                    clock=self._clock,
                )
        if placed:
            notes.append(f"{len(placed)} job{'s' if len(placed) > 1 else ''} placed on it first")
        if synced:
            self._on_capacity()
        return ", ".join(notes)

    async def observe(self, now: datetime) -> Observed:
        """What the providers and the joined clusters show, and the review of it."""
        listed: dict[str, dict[str, CloudInstance]] = {}
        for site in sorted(self._joins):
            try:
                listed[site] = {i.id: i for i in await self._connectors[site].instances()}
            except ConnectorError as exc:
                log.warning("cannot list %s's instances: %s", site, exc)
        released = await self._released(now)
        recorded = await self._store.pools()
        inventories: dict[str, SiteInventory] = {}
        slots: dict[str, list[NodeSlot]] = {}
        ledger: dict[str, dict[str, int]] = {}
        for site in sorted(set(self._joins.values())):
            try:
                inv = await self._connectors[site].inventory()
            except ConnectorError as exc:
                log.warning("cannot read %s's nodes: %s", site, exc)
                continue
            inventories[site] = inv
            mine = [p for p in recorded if p.site == site]
            # nodes are looked for among all but released ones, and in the ledger by name
            slots[site] = node_slots(visible_pools(inv.pools, recorded=mine, hidden=released))
            ledger.update(ledger_of(mine))
        alive = await self._capacity.alive_instances()
        slot_pools = {s.pool_id for nodes in slots.values() for s in nodes}
        launched = min((i.launched_at for i in alive), default=now)
        rev = review(
            now=now,
            settings=self._settings,
            instances=alive,
            listed=listed,
            slots=slots,
            joins_of=self._joins,
            ledger=ledger,
            work=await self._store.running_work(),
            ended=await self._capacity.ended_work(ledger.keys() | slot_pools, since=launched),
            keep_gpus=await self._needs(now),
        )
        return Observed(review=rev, inventories=inventories, listed=listed)

    async def _released(self, now: datetime) -> set[str]:
        """Provider ids and node names of instances released lately (their nodes linger)."""
        gone = await self._capacity.released_since(now - RECENTLY)
        return {i.provider_id for i in gone if i.provider_id} | {i.node for i in gone if i.node}

    async def _hidden(self, now: datetime) -> set[str]:
        """Nodes the ledger must not have: released instances', and those of instances not
        yet seen joining (`refresh` adds them, and gives them to their jobs first)."""
        unseen = [i for i in await self._capacity.alive_instances() if i.joined_at is None]
        return (
            await self._released(now)
            | {i.provider_id for i in unseen if i.provider_id}
            | {i.instance_id for i in unseen}
        )

    async def visible(self, inv: SiteInventory) -> SiteInventory:
        """A joined site's inventory as the ledger should have it (see `_hidden`); other
        sites' as they are. For whatever else syncs inventories into the store."""
        if inv.site.name not in set(self._joins.values()):
            return inv
        hidden = await self._hidden(self._clock.now())
        return replace(inv, pools=tuple(visible_pools(inv.pools, recorded=(), hidden=hidden)))

    async def sync(
        self, inventories: Mapping[str, SiteInventory], *, now: datetime, force: bool
    ) -> bool:
        """Write the joined sites' capacity to the ledger when it changed (or `force`)."""
        hidden = await self._hidden(now)
        recorded = await self._store.pools()
        sites = {s.name: s for s in await self._store.sites()}
        changed = False
        for name, inv in sorted(inventories.items()):
            mine = [p for p in recorded if p.site == name]
            visible = visible_pools(inv.pools, recorded=mine, hidden=hidden)
            if name not in sites or (not force and same_layout(visible, mine)):
                continue
            await self._store.sync_site(sites[name], visible)
            changed = True
        return changed

    # -- reclaim ------------------------------------------------------------------------

    async def reclaim(self) -> list[str]:
        """Release what the review decides and the strays; what was released, and why."""
        now = self._clock.now()
        seen = await self.observe(now)
        rev = seen.review
        await self._capacity.set_idle_since(rev.idle)
        released = await self._release(rev.release, now=now)
        released += await self._release_strays(seen.listed, now=now)
        if released:
            await self.sync(seen.inventories, now=now, force=True)
        return released + [f"kept {i.instance_id}: {why}" for i, why in rev.held]

    async def _release(
        self, decided: Sequence[tuple[BurstInstance, str]], *, now: datetime
    ) -> list[str]:
        by_site: dict[str, list[tuple[BurstInstance, str]]] = {}
        for inst, why in decided:
            by_site.setdefault(inst.provider_site, []).append((inst, why))
        done: list[str] = []
        for site, items in sorted(by_site.items()):
            ids = [i.instance_id for i, _ in items]
            try:
                await self._connectors[site].release(instance_ids=ids)
            except ConnectorError as exc:
                log.warning("cannot release %s on %s: %s; retried next pass", ids, site, exc)
                continue
            # a burst none of whose instances ever joined failed (a boot or join problem):
            # the failure memory then keeps the target out of plans for a while
            alive = await self._capacity.alive_instances()
            for action_id in sorted({i.action_id for i, _ in items if i.joined_at is None}):
                if not any(a.joined_at for a in alive if a.action_id == action_id):
                    await self._capacity.mark_failed(
                        action_id, at=now, detail="its instances never joined their cluster"
                    )
            await self._record(items, now=now, detail="reclaim")
            done += [f"released {i.instance_id} ({why})" for i, why in items]
        return done

    async def _record(
        self, items: Sequence[tuple[BurstInstance, str]], *, now: datetime, detail: str
    ) -> None:
        """One reclaim record per provider site and GPU model, with cost and carbon."""
        groups: dict[tuple[str, str], list[BurstInstance]] = {}
        for inst, why in items:
            groups.setdefault((inst.provider_site, inst.gpu_model), []).append(
                replace(inst, release_reason=why)
            )
        for (site, model), insts in sorted(groups.items()):
            record = CapacityAction(
                id=reclaim_id(site, [i.instance_id for i in insts], now=now),
                kind=ActionKind.RECLAIM,
                provider_site=site,
                joins_site=self._joins.get(site, ""),
                gpu_model=model,
                count=len(insts),
                spot=any(i.spot for i in insts),
                reason="; ".join(f"{i.instance_id}: {i.release_reason}" for i in insts),
                requested_at=now,
                usd_per_hour=sum(i.usd_per_hour for i in insts),
                gco2e_per_hour=_total(i.gco2e_per_hour for i in insts),
                state=ActionState.RELEASED,
                instance_ids=tuple(i.instance_id for i in insts),
                released_at=now,
                cost_usd=sum(i.cost_usd(until=now) for i in insts),
                gco2e=_total(i.gco2e(until=now) for i in insts),
                detail=detail,
            )
            await self._capacity.release(record, instances=insts, at=now)

    async def _release_strays(
        self, listed: Mapping[str, Mapping[str, CloudInstance]], *, now: datetime
    ) -> list[str]:
        """Release broker-owned instances no burst recorded, once seen for the join timeout
        (timed from when this process first saw them: provider clocks are not ours)."""
        known = {(i.provider_site, i.instance_id) for i in await self._capacity.alive_instances()}
        known |= {
            (i.provider_site, i.instance_id)
            for i in await self._capacity.released_since(now - RECENTLY)
        }
        for action in await self._capacity.open_actions():  # a provider answer on its way
            known |= {(action.provider_site, i) for i in action.instance_ids}
        strays = {
            (site, inst.id): inst
            for site, instances in listed.items()
            for inst in instances.values()
            if (site, inst.id) not in known
            and inst.state in (InstanceState.PENDING, InstanceState.RUNNING)
        }
        self._strays = {k: self._strays.get(k, now) for k in strays}
        due: dict[str, list[CloudInstance]] = {}
        for (site, _), inst in sorted(strays.items()):
            if (
                now - self._strays[(site, inst.id)]
            ).total_seconds() >= self._settings.join_timeout_s:
                due.setdefault(site, []).append(inst)
        done: list[str] = []
        for site, insts in sorted(due.items()):
            ids = [i.id for i in insts]
            try:
                await self._connectors[site].release(instance_ids=ids)
            except ConnectorError as exc:
                log.warning("cannot release strays %s on %s: %s", ids, site, exc)
                continue
            record = CapacityAction(
                id=reclaim_id(site, ids, now=now),
                kind=ActionKind.RECLAIM,
                provider_site=site,
                joins_site=self._joins.get(site, ""),
                gpu_model=",".join(sorted({i.gpu_model for i in insts})),
                count=len(ids),
                spot=any(i.spot for i in insts),
                reason="started for the broker but recorded by no burst (a lost answer)",
                requested_at=now,
                usd_per_hour=0.0,  # not known: no plan priced it
                gco2e_per_hour=None,
                state=ActionState.RELEASED,
                instance_ids=tuple(ids),
                released_at=now,
                detail="stray",
            )
            await self._capacity.release(record, instances=[], at=now)
            for i in ids:
                self._strays.pop((site, i), None)
            done += [f"released {i} (stray)" for i in ids]
        return done


def reclaim_id(site: str, instance_ids: Iterable[str], *, now: datetime) -> str:
    key = "\n".join((site, *sorted(instance_ids)))
    return f"reclaim-{now:%Y%m%d-%H%M%S}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _total(values: Iterable[float | None]) -> float | None:
    known = list(values)
    return None if any(v is None for v in known) else sum(v for v in known if v is not None)
