"""Which burst instances have joined, which sit idle, and which to let go. Pure.

An instance is matched to its Kubernetes node by the node's `spec.providerID` (the joined
site's pools list them in `extra["provider_ids"]`, aligned with `extra["nodes"]`), else by
a node named like the instance (GCE names nodes after their VMs).

**Busy.** The broker's ledger is kept by node name, and a placement pins its pods to the
nodes it names (`connectors.kubernetes.manifest`), so the ledger says which node holds a
job: an instance is busy while its node's entry is non-zero. A placement that names no
nodes (a row from before the pinning) may run on any node of its pool: while such a job
holds GPUs on the instance's pool and was placed after the instance was launched, or has
not started yet, it may run on it, and the instance counts as busy. Work placed and
started before the instance existed was given a node that existed then. (Times compared
are the broker's own: a job's start time is the cluster's.) This never reclaims under
running work, preemptible or not.

**Released**, with the reason recorded:
* gone: the provider no longer lists it (spot reclaimed, terminated by hand) — recorded only;
* never joined: no node after `join_timeout_s` from launch (a failed boot);
* idle: idle for `idle_ttl_s`, unless the forecast still needs its GPUs. Any idle node may
  go, wherever it sits in its pool: the ledger and the placements know nodes by name, so
  a node leaving moves no one's bookings. A node the ledger does not have yet (joined
  since the last sync) is held until it does.
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
    """One ready GPU node of a joined site."""

    pool_id: str
    name: str  # the ledger's key for it
    provider_id: str


def node_slots(pools: Sequence[GpuPool]) -> list[NodeSlot]:
    """The nodes of a Kubernetes site's pools (`extra["nodes"]`, aligned with
    `extra["provider_ids"]`)."""
    slots = []
    for pool in pools:
        names = [n for n in pool.extra.get("nodes", "").split(",") if n]
        ids = pool.extra.get("provider_ids", "").split(",")
        for i, name in enumerate(names):
            slots.append(
                NodeSlot(pool_id=pool.id, name=name, provider_id=ids[i] if i < len(ids) else "")
            )
    return slots


def ledger_of(pools: Sequence[GpuPool]) -> dict[str, dict[str, int]]:
    """The ledger as `review` takes it: per pool, milli-GPUs in use per node name."""
    return {p.id: dict(zip(p.names(), p.node_used(), strict=True)) for p in pools}


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
    ledger: Mapping[str, Mapping[str, int]],
    work: Sequence[RunningWork],
    ended: Sequence[tuple[str, datetime, datetime]] = (),
    keep_gpus: Mapping[str, float],
) -> Review:
    """Decide about each alive instance. `listed`: per provider site its instances (a site
    missing could not be listed: nothing of it is called gone); `slots`: per joined site its
    ready nodes (a site missing could not be read: its instances are left as they are);
    `ledger`: per pool, milli-GPUs held per node name (`ledger_of`); `ended`: (pool, placed
    at, ended at) of work that ended lately; `keep_gpus`: burst GPUs per model the forecast
    still needs."""
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
    ledger: Mapping[str, Mapping[str, int]],
    work: Sequence[RunningWork],
) -> bool:
    if slot is not None and ledger.get(slot.pool_id, {}).get(slot.name, 0) > 0:
        return True
    # Work that names its nodes is pinned to them, and in the ledger there; without the
    # instance's node in sight (slot None), any work may be on it. placed_at is the
    # broker's clock, as launched_at is; started_at is the cluster's.
    return any(
        w.pool_id in pools
        and (slot is None or not w.node_indices)
        and (w.started_at is None or w.placed_at >= inst.launched_at)
        for w in work
    )


def _release_expired(
    expired: list[tuple[BurstInstance, NodeSlot | None]],
    *,
    out: Review,
    now: datetime,
    settings: BurstSettings,
    ledger: Mapping[str, Mapping[str, int]],
    keep_gpus: Mapping[str, float],
    needed: dict[str, float],
) -> None:
    """Release the idle-expired instances the forecast does not need and the ledger has."""
    # most recently busy first: they are the ones kept for the forecast
    expired.sort(key=lambda e: (-(e[0].idle_since or now).timestamp(), key_of(e[0])))
    for inst, slot in expired:
        idle_s = (now - (inst.idle_since or now)).total_seconds()
        want = keep_gpus.get(inst.gpu_model, 0.0)
        if needed.get(inst.gpu_model, 0.0) < want:
            needed[inst.gpu_model] = needed.get(inst.gpu_model, 0.0) + inst.gpus
            out.held.append((inst, f"forecast needs {want:g} burst {inst.gpu_model} GPUs"))
            continue
        if slot is not None and slot.name not in ledger.get(slot.pool_id, {}):
            out.held.append((inst, f"node {slot.name} is not in {slot.pool_id}'s ledger yet"))
            continue
        out.release.append(
            (
                inst,
                f"idle {_minutes(idle_s)} ≥ TTL {_minutes(settings.idle_ttl_s)}",
            )
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"
