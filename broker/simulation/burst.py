"""Cloud bursting in the replay: the live broker's pure planner and idle review, in virtual time.

A fleet file whose `burst:` section says `enabled: true` makes its cloud sites (every site
not `private`) burst capacity: their pools are *offers*, not standing capacity. They start
at 0 nodes and grow by the instances the planner starts, up to the pool's configured node
count, which stands for what the provider lets the broker hold in that region. The
`burst.targets` list cannot name `kind: sim` sites (the settings require an aws or gcp
provider joining a kubernetes site), so here a cloud site is its own target: its instances
join its own pools.

Every `plan_interval_s` the simulator hands this module the pending jobs; it builds the
planner's inputs with the live broker's own functions (`broker.burst.gather.offers_of` and
`waiting_jobs`, `broker.burst.accounting.fleet_state`), calls `broker.burst.planner.plan`
and starts the actions. An instance is billed from its launch and becomes a node of its pool
`boot_delay_s` later. Every `review_interval_s` the live idle review
(`broker.burst.reclaim.review`) decides what to release: any node idle past `idle_ttl_s`.
A node leaving its pool moves the nodes after it down one position, so the positions the
running work on that pool holds (`RunningWork.node_indices`) are moved with them.

Every job names its nodes, so the ledger is exact: the review gets no running work (the
live broker's guess for placements that name no nodes is not needed), and idle clocks start
when a node's last job ends, not at the next review.

Left out: the demand forecast (bursts answer waiting work only), spot reclaims (a spot
instance lives until released), provider refusals other than the pool's limit, and the power
an idle node draws (emissions are the jobs' own, as without bursting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from broker.burst import planner
from broker.burst.accounting import fleet_state
from broker.burst.gather import offers_of, waiting_jobs
from broker.burst.model import BurstAction, Offer
from broker.burst.reclaim import NodeSlot, ledger_of, review
from broker.burst.settings import BurstSettings
from broker.domain.capacity import ActionKind, ActionState, BurstInstance, CapacityAction
from broker.domain.engine import CarbonOracle, Engine
from broker.domain.fleet import GpuPool, NodeUse, Site
from broker.domain.jobs import Job
from broker.domain.latency import LatencyMatrix
from broker.domain.work import RunningWork
from connectors.base import SiteInventory


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstOptions:
    settings: BurstSettings
    sites: frozenset[str]  # cloud sites whose pools are offers
    boot_delay_s: float = 300.0  # launch → node usable (VM boot, join, image pull)
    plan_interval_s: float = 300.0  # the live planner's default pass interval
    review_interval_s: float = 60.0


def burst_sites(sites: Sequence[Site], settings: BurstSettings) -> frozenset[str]:
    """The sites that burst: every cloud site when the fleet's `burst:` is enabled."""
    if not settings.enabled:
        return frozenset()
    return frozenset(s.name for s in sites if not s.private)


def elastic(pools: Sequence[GpuPool], *, sites: frozenset[str]) -> list[GpuPool]:
    """`pools` with those of the burst sites emptied: they hold only started instances."""
    return [
        replace(p, nodes=0, node_use=(), node_names=()) if p.site in sites else p for p in pools
    ]


@dataclass(slots=True)
class SimInstance:
    record: BurstInstance
    pool_id: str
    ready_at: datetime
    jobs: int = 0  # runs on its node now
    busy_since: datetime | None = None
    busy_s: float = 0.0


class CloudBurst:
    """Burst instances of one replay: what runs, what it cost, what to start and release."""

    def __init__(
        self,
        *,
        options: BurstOptions,
        limits: Sequence[GpuPool],
        sites: Sequence[Site],
        engine: Engine,
        latency: LatencyMatrix,
        carbon: CarbonOracle,
    ) -> None:
        """`limits` are the configured pools: a burst site's node count is its limit."""
        self.options = options
        self.limits = {p.id: p for p in limits if p.site in options.sites}
        self.sites = list(sites)
        self.site_by_name = {s.name: s for s in sites}
        self.engine = engine
        self.latency = latency
        self.carbon = carbon
        self.instances: dict[str, SimInstance] = {}
        # instance ids in the order of their pool's nodes (its `node_names`)
        self.nodes: dict[str, list[str]] = {p: [] for p in self.limits}
        self.actions: dict[str, CapacityAction] = {}
        self.failures: list[CapacityAction] = []
        self.peak = 0

    # ---- state ----------------------------------------------------------------------------

    def alive(self) -> list[SimInstance]:
        return [i for i in self.instances.values() if i.record.alive]

    def is_elastic(self, pool_id: str) -> bool:
        return pool_id in self.limits

    # ---- planning -------------------------------------------------------------------------

    def plan(
        self,
        *,
        now: datetime,
        pending: Sequence[tuple[Job, datetime]],
        pools: Sequence[GpuPool],
    ) -> list[SimInstance]:
        """Run the planner on `pending` (each job with when it last became pending) and
        start its actions; the instances started, each usable at its `ready_at`."""
        s = self.options.settings
        queue = sorted(pending, key=lambda js: (js[0].spec.tier.rank, js[1], js[0].id))
        jobs = [replace(job, updated_at=since) for job, since in queue[: s.queue_limit]]
        offers, shapes = self._offers(now)
        waiting = waiting_jobs(
            jobs,
            now=now,
            engine=self.engine,
            sites=self.sites,
            pools=pools,
            carbon=self.carbon,
            latency=self.latency,
            offers=offers,
            shapes=shapes,
            wait_targets=s.wait_target_s,
        )
        if not waiting:
            return []
        records = [i.record for i in self.instances.values()]
        fleet = fleet_state(
            now=now,
            alive=[r for r in records if r.alive],
            open_actions=[a for a in self.actions.values() if a.state.open],
            failures=self.failures,
            today=records,
            tenants_of={a.id: a.tenants for a in self.actions.values()},
            gpus_per_instance={},
            failure_memory_s=s.failure_memory_s,
        )
        result = planner.plan(
            now=now, waiting=waiting, offers=offers, fleet=fleet, settings=s, latency=self.latency
        )
        started: list[SimInstance] = []
        for action in result.actions:
            started += self._start(action, now=now)
        self.peak = max(self.peak, len(self.alive()))
        return started

    def _offers(self, now: datetime) -> tuple[list[Offer], dict[str, GpuPool]]:
        """Offers of the burst sites' pools with room under their limit."""
        full = {p for p in self.limits if self._room(p) <= 0}
        offers: list[Offer] = []
        for name in sorted(self.options.sites):
            site = self.site_by_name[name]
            pools = tuple(p for p in self.limits.values() if p.site == name and p.id not in full)
            if not pools:
                continue
            hourly = self.carbon.hourly(site.grid_zone, start=now, end=now + timedelta(hours=1))
            intensity = hourly[0][1] if hourly else None
            inv = SiteInventory(site=site, pools=pools)
            offers += offers_of(
                inv, joins=name, intensity=intensity, power_kw=self.engine.settings.power_kw
            )
        return offers, {p.id: p for p in self.limits.values() if p.id not in full}

    def _room(self, pool_id: str) -> int:
        alive = sum(1 for i in self.alive() if i.pool_id == pool_id)
        return self.limits[pool_id].nodes - alive

    def _start(self, action: BurstAction, *, now: datetime) -> list[SimInstance]:
        """Start what the pool's limit allows; a shortfall is a refusal the failure memory
        keeps, so the next pass fails over to another target."""
        offer = action.offer
        count = min(action.count, self._room(offer.pool_id))
        action_id = f"burst-{len(self.actions) + len(self.failures) + 1}"
        fields: dict[str, Any] = {
            "kind": ActionKind.BURST,
            "provider_site": offer.provider_site,
            "joins_site": offer.joins_site,
            "gpu_model": offer.gpu_model,
            "spot": offer.spot,
            "reason": action.reason,
            "requested_at": now,
            "gco2e_per_hour": action.gco2e_per_hour,
            "for_jobs": action.for_jobs,
            "tenants": action.tenants,
        }
        if count < action.count:
            self.failures.append(
                CapacityAction(
                    id=f"{action_id}-refused",
                    count=action.count - count,
                    usd_per_hour=0.0,
                    state=ActionState.FAILED,
                    detail=f"{offer.pool_id} holds at most {self.limits[offer.pool_id].nodes}",
                    **fields,
                )
            )
        if count <= 0:
            return []
        site = self.site_by_name[offer.provider_site]
        started = []
        for k in range(count):
            iid = f"{action_id}-{k}"
            record = BurstInstance(
                provider_site=offer.provider_site,
                instance_id=iid,
                action_id=action_id,
                gpu_model=offer.gpu_model,
                gpus=offer.gpus_per_instance,
                zone=site.grid_zone,
                spot=offer.spot,
                usd_per_hour=offer.usd_per_instance_hour,
                gco2e_per_hour=offer.gco2e_per_instance_hour,
                launched_at=now,
                provider_id=iid,
                node=iid,
            )
            ready = now + timedelta(seconds=self.options.boot_delay_s)
            inst = SimInstance(record=record, pool_id=offer.pool_id, ready_at=ready)
            self.instances[iid] = inst
            started.append(inst)
        self.actions[action_id] = CapacityAction(
            id=action_id,
            count=count,
            usd_per_hour=offer.usd_per_instance_hour * count,
            state=ActionState.REQUESTED,
            instance_ids=tuple(i.record.instance_id for i in started),
            **fields,
        )
        return started

    # ---- nodes ----------------------------------------------------------------------------

    def join(self, instance_id: str, *, now: datetime, pools: dict[str, GpuPool]) -> None:
        """The instance's node joins its pool as the last node; its idle clock starts."""
        inst = self.instances[instance_id]
        inst.record = replace(inst.record, joined_at=now, idle_since=now)
        pool = pools[inst.pool_id]
        pools[pool.id] = replace(
            pool,
            nodes=pool.nodes + 1,
            node_use=(*pool.uses(), NodeUse.empty(pool.gpus_per_node)),
            node_names=(*pool.names(), instance_id),
        )
        self.nodes[pool.id].append(instance_id)
        action = self.actions[inst.record.action_id]
        if all(self.instances[i].record.joined_at for i in action.instance_ids):
            self.actions[action.id] = replace(action, state=ActionState.READY, ready_at=now)

    def occupy(self, pool_id: str, nodes: Sequence[int], *, now: datetime, delta: int) -> None:
        """A run started (+1) or ended (-1) on `nodes` of `pool_id`: busy and idle time."""
        if pool_id not in self.limits:
            return
        for index in nodes:
            inst = self.instances[self.nodes[pool_id][index]]
            inst.jobs += delta
            if inst.jobs == 1 and delta > 0:
                inst.busy_since = now
                inst.record = replace(inst.record, idle_since=None)
            elif inst.jobs == 0 and inst.busy_since is not None:
                inst.busy_s += (now - inst.busy_since).total_seconds()
                inst.busy_since = None
                inst.record = replace(inst.record, idle_since=now)

    def reclaim(
        self, *, now: datetime, pools: dict[str, GpuPool], running: dict[str, RunningWork]
    ) -> list[SimInstance]:
        """Release what the live idle review lets go: their nodes leave their pools, and the
        work in `running` on those pools is moved to its nodes' new positions."""
        joined = [i for i in self.alive() if i.record.joined_at is not None]
        if not joined:
            return []
        slots: dict[str, list[NodeSlot]] = {name: [] for name in self.options.sites}
        for pool_id, ids in self.nodes.items():
            site = self.limits[pool_id].site
            slots[site] += [NodeSlot(pool_id=pool_id, name=iid, provider_id=iid) for iid in ids]
        # The idle clocks kept by `occupy` are exact, so the review's own changes to them
        # (idle from the review that first sees a node idle) are not applied.
        out = review(
            now=now,
            settings=self.options.settings,
            instances=[i.record for i in joined],
            listed={},
            slots=slots,
            joins_of={name: name for name in self.options.sites},
            ledger=ledger_of([pools[p] for p in self.limits]),
            work=(),
            keep_gpus={},
        )
        released = [self.instances[r.instance_id] for r, _ in out.release]
        for r, why in out.release:
            inst = self.instances[r.instance_id]
            inst.record = replace(inst.record, released_at=now, release_reason=why)
            action = self.actions[inst.record.action_id]
            if all(not self.instances[i].record.alive for i in action.instance_ids):
                self.actions[action.id] = replace(
                    action, state=ActionState.RELEASED, released_at=now
                )
        for pool_id in sorted({i.pool_id for i in released}):
            gone = {i.record.instance_id for i in released if i.pool_id == pool_id}
            self._remove(pools, running, pool_id=pool_id, gone=gone)
        return released

    def _remove(
        self,
        pools: dict[str, GpuPool],
        running: dict[str, RunningWork],
        *,
        pool_id: str,
        gone: set[str],
    ) -> None:
        """Take the nodes named in `gone` out of the pool, and move the positions of the
        work on it: each node after a removed one moves down."""
        pool = pools[pool_id]
        use, names = pool.uses(), pool.names()
        kept = [k for k, name in enumerate(names) if name not in gone]
        for k, name in enumerate(names):
            if name in gone and (use[k].used_milli or use[k].cpu_milli):
                raise AssertionError(f"review released {name}, which holds work")
        pools[pool_id] = replace(
            pool,
            nodes=len(kept),
            node_use=tuple(use[k] for k in kept),
            node_names=tuple(names[k] for k in kept),
        )
        self.nodes[pool_id] = [names[k] for k in kept]
        moved = {old: new for new, old in enumerate(kept)}
        for job_id, work in running.items():
            if work.pool_id != pool_id or all(moved.get(i) == i for i in work.node_indices):
                continue
            if any(i not in moved for i in work.node_indices):
                raise AssertionError(f"review released a node job {job_id} runs on")
            running[job_id] = replace(work, node_indices=tuple(moved[i] for i in work.node_indices))

    # ---- figures --------------------------------------------------------------------------

    def summary(self, *, end: datetime) -> dict[str, Any]:
        """Spend per instance from launch to release (or `end`); idle spend is the part
        after its node joined with no job on it, boot spend the part before it joined."""
        spend = boot = idle = hours = 0.0
        by_site: dict[str, list[float]] = {}
        for inst in self.instances.values():
            r = inst.record
            until = r.released_at or end
            alive_h = r.hours_alive(start=r.launched_at, end=until)
            joined_at = r.joined_at or until
            boot_h = (min(joined_at, until) - r.launched_at).total_seconds() / 3600
            busy_s = inst.busy_s
            if inst.busy_since is not None:
                busy_s += (until - inst.busy_since).total_seconds()
            idle_h = max(0.0, alive_h - boot_h - busy_s / 3600)
            spend += r.usd_per_hour * alive_h
            boot += r.usd_per_hour * boot_h
            idle += r.usd_per_hour * idle_h
            hours += alive_h
            site = by_site.setdefault(r.provider_site, [0.0, 0.0, 0.0])
            site[0] += 1
            site[1] += r.usd_per_hour * alive_h
            site[2] += r.usd_per_hour * idle_h
        return {
            "instances_started": len(self.instances),
            "instances_alive_at_end": sum(1 for i in self.instances.values() if i.record.alive),
            "peak_instances": self.peak,
            "instance_hours": round(hours, 2),
            "cloud_spend_usd": round(spend, 2),
            "boot_spend_usd": round(boot, 2),
            "idle_spend_usd": round(idle, 2),
            "refusals": len(self.failures),
            "by_site": {
                name: {"instances": int(n), "spend_usd": round(usd, 2), "idle_usd": round(i, 2)}
                for name, (n, usd, i) in sorted(by_site.items(), key=lambda kv: -kv[1][1])
            },
        }


def settings_figures(options: BurstOptions) -> dict[str, Any]:
    """The burst settings a replay ran with, for the summary."""
    s = options.settings
    return {
        "sites": sorted(options.sites),
        "max_instances": s.max_instances,
        "max_per_action": s.max_per_action,
        "wait_target_s": {t.value: v for t, v in sorted(s.wait_target_s.items())},
        "idle_ttl_s": s.idle_ttl_s,
        "budget_usd_per_day": s.budget_usd_per_day,
        "boot_delay_s": options.boot_delay_s,
        "plan_interval_s": options.plan_interval_s,
        "review_interval_s": options.review_interval_s,
    }


def pending_view(
    pending: Mapping[str, Job], *, since: Mapping[str, datetime]
) -> list[tuple[Job, datetime]]:
    """The pending jobs with when each became pending, for `CloudBurst.plan`."""
    return [(job, since[job_id]) for job_id, job in pending.items()]
