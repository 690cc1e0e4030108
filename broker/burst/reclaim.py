"""Which burst instances have joined, which sit idle, and which to let go. Pure.

An instance is matched to its Kubernetes node by the node's `spec.providerID` (the joined
site's pools list them in `extra["provider_ids"]`, aligned with `extra["nodes"]`), else by
a node named like the instance (GCE names nodes after their VMs).

**Busy.** The broker's ledger counts GPUs per node index, but Kubernetes, not the broker,
chooses the node a pod runs on; so the ledger cannot say which node holds a job. An instance
counts as busy while its node's ledger entry is non-zero, or while any job holds GPUs on its
pool that was placed after the instance was launched, or has not started yet: such a job
may run on it. Work placed and started before the instance existed was given a node that
existed then. (Times compared are the broker's own: a job's start time is the cluster's.)
This never reclaims under running work, preemptible or not, at the price of keeping a node
while newer work runs elsewhere in its pool.

**Released**, with the reason recorded:
* gone: the provider no longer lists it (spot reclaimed, terminated by hand) — recorded only;
* never joined: no node after `join_timeout_s` from launch (a failed boot);
* idle: idle for `idle_ttl_s`, unless the forecast still needs its GPUs, and only when every
  node after it in its pool's order is idle in the ledger too. The ledger is kept by node
  index, and removing a node shifts the ones after it down; if one of those held GPUs, the
  ledger would read its allocation at the wrong node. Such an instance is held until they
  are free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from broker.burst.settings import BurstSettings
from broker.domain.capacity import BurstInstance
from broker.domain.fleet import GpuPool
from broker.domain.work import RunningWork
from connectors.base import CloudInstance, InstanceState

InstanceKey = tuple[str, str]  # (provider site, instance id)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSlot:
    """One ready GPU node of a joined site, and where the ledger keeps it (None: not in
    the ledger's layout yet)."""

    pool_id: str
    index: int | None
    name: str
    provider_id: str


def _names(pool: GpuPool) -> list[str]:
    return [n for n in pool.extra.get("nodes", "").split(",") if n]


def node_slots(pools: Sequence[GpuPool], *, layout: Sequence[GpuPool] = ()) -> list[NodeSlot]:
    """The nodes of a Kubernetes site's pools (`extra["nodes"]`), with their positions in
    `layout`, the pools as the ledger has them (default: `pools` themselves)."""
    positions = {(p.id, name): i for p in (layout or pools) for i, name in enumerate(_names(p))}
    slots = []
    for pool in pools:
        ids = pool.extra.get("provider_ids", "").split(",")
        for i, name in enumerate(_names(pool)):
            slots.append(
                NodeSlot(
                    pool_id=pool.id,
                    index=positions.get((pool.id, name)),
                    name=name,
                    provider_id=ids[i] if i < len(ids) else "",
                )
            )
    return slots


@dataclass(slots=True)
class Review:
    joined: dict[InstanceKey, str] = field(default_factory=dict)  # → node name
    idle: dict[InstanceKey, datetime | None] = field(default_factory=dict)  # changes only
    release: list[tuple[BurstInstance, str]] = field(default_factory=list)  # with why
    gone: list[tuple[BurstInstance, str]] = field(default_factory=list)  # record only
    held: list[tuple[BurstInstance, str]] = field(default_factory=list)  # idle, kept: why


def key_of(inst: BurstInstance) -> InstanceKey:
    return (inst.provider_site, inst.instance_id)


def review(
    *,
    now: datetime,
    settings: BurstSettings,
    instances: Sequence[BurstInstance],
    listed: Mapping[str, Mapping[str, CloudInstance]],
    slots: Mapping[str, Sequence[NodeSlot]],
    joins_of: Mapping[str, str],
    ledger: Mapping[str, tuple[int, ...]],
    work: Sequence[RunningWork],
    ended: Sequence[tuple[str, datetime, datetime]] = (),
    keep_gpus: Mapping[str, float],
) -> Review:
    """Decide about each alive instance. `listed`: per provider site its instances (a site
    missing could not be listed: nothing of it is called gone); `slots`: per joined site its
    ready nodes (a site missing could not be read: its instances are left as they are);
    `ledger`: milli-GPUs held per node index of each pool; `ended`: (pool, placed at, ended
    at) of work that ended lately; `keep_gpus`: burst GPUs per model the forecast still
    needs."""
    out = Review()
    expired: list[tuple[BurstInstance, NodeSlot | None]] = []
    needed: dict[str, float] = {}  # GPUs per model that are busy or not yet idle long enough
    for inst in instances:
        key = key_of(inst)
        seen = listed.get(inst.provider_site)
        if seen is not None:
            found = seen.get(inst.instance_id)
            if found is None or found.state is InstanceState.TERMINATED:
                out.gone.append((inst, "no longer listed by the provider"))
                continue
        site = joins_of.get(inst.provider_site)
        nodes = slots.get(site) if site is not None else None
        if nodes is None:
            needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            continue
        slot = _slot_of(inst, nodes)
        joined_at = inst.joined_at
        if slot is not None and joined_at is None:
            out.joined[key] = slot.name
            joined_at = now
        if joined_at is None:
            if (now - inst.launched_at).total_seconds() >= settings.join_timeout_s:
                out.release.append(
                    (inst, f"no node joined {site} within {settings.join_timeout_s / 60:.0f} min")
                )
            else:
                needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            continue
        pools = {s.pool_id for s in nodes} if slot is None else {slot.pool_id}
        busy = _busy(inst, slot, pools=pools, ledger=ledger, work=work)
        idle_since = inst.idle_since if key not in out.joined else now
        if busy:
            if inst.idle_since is not None or key in out.joined:  # joining starts the clock
                out.idle[key] = None
            needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            continue
        # idle from the end of the last work that may have run on it, seen running or not
        # (an end time after now comes from a clock ahead of ours: it would never expire)
        last = max(
            (e for p, placed, e in ended if p in pools and placed >= inst.launched_at and e <= now),
            default=None,
        )
        since = max((t for t in (idle_since, last) if t is not None), default=now)
        if since != idle_since:
            out.idle[key] = idle_since = since
        if (now - idle_since).total_seconds() < settings.idle_ttl_s:
            needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            continue
        expired.append((inst, slot))
    _release_expired(
        expired,
        out=out,
        now=now,
        settings=settings,
        ledger=ledger,
        keep_gpus=keep_gpus,
        needed=needed,
    )
    return out


def _slot_of(inst: BurstInstance, nodes: Sequence[NodeSlot]) -> NodeSlot | None:
    if inst.provider_id:
        for s in nodes:
            if s.provider_id == inst.provider_id:
                return s
    return next((s for s in nodes if s.name == inst.instance_id or s.name == inst.node), None)


def _busy(
    inst: BurstInstance,
    slot: NodeSlot | None,
    *,
    pools: set[str],
    ledger: Mapping[str, tuple[int, ...]],
    work: Sequence[RunningWork],
) -> bool:
    if slot is not None and slot.index is not None:
        used = ledger.get(slot.pool_id, ())
        if slot.index < len(used) and used[slot.index] > 0:
            return True
    # placed_at is the broker's clock, as launched_at is; started_at is the cluster's
    return any(
        w.pool_id in pools and (w.started_at is None or w.placed_at >= inst.launched_at)
        for w in work
    )


def _release_expired(
    expired: list[tuple[BurstInstance, NodeSlot | None]],
    *,
    out: Review,
    now: datetime,
    settings: BurstSettings,
    ledger: Mapping[str, tuple[int, ...]],
    keep_gpus: Mapping[str, float],
    needed: dict[str, float],
) -> None:
    """Release the idle-expired instances the forecast and the ledger's order allow."""
    # most recently busy first: they are the ones kept for the forecast
    expired.sort(key=lambda e: (-(e[0].idle_since or now).timestamp(), key_of(e[0])))
    for inst, slot in expired:
        idle_s = (now - (inst.idle_since or now)).total_seconds()
        want = keep_gpus.get(inst.gpu_model, 0.0)
        if needed.get(inst.gpu_model, 0.0) < want:
            needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            out.held.append((inst, f"forecast needs {want:g} burst {inst.gpu_model} GPUs"))
            continue
        if slot is not None:
            if slot.index is None or slot.pool_id not in ledger:
                out.held.append((inst, f"the ledger's layout of {slot.pool_id} is out of date"))
                continue
            used = ledger[slot.pool_id]
            last_busy = max((i for i, milli in enumerate(used) if milli > 0), default=-1)
            if slot.index < last_busy:
                out.held.append(
                    (inst, f"node {slot.name} precedes a busy node in {slot.pool_id}'s order")
                )
                continue
        out.release.append(
            (
                inst,
                f"idle {_minutes(idle_s)} ≥ TTL {_minutes(settings.idle_ttl_s)}",
            )
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"
