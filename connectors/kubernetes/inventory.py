"""Nodes and pods → the site's GPU pools, health, and the GPUs other users hold.

A pool is the set of ready, schedulable GPU nodes that share a model, memory, GPUs per node,
MIG layout and sharing mode; its id `<site>/<model>-<gpus>x` (plus `-mig-<profiles>` or
`-shared`, and the memory when two pools would still collide) depends only on that key,
so it is stable while nodes come and go. Nodes are ordered by name: index i of
`node_allocated` is the i-th name in `extra["nodes"]`, and of `extra["provider_ids"]` (the
nodes' `spec.providerID`, present when some node has one: burst instances are found by it).

A node is left out (and the site reported DEGRADED) when it is cordoned, not Ready, or has
a NoSchedule/NoExecute taint other than `nvidia.com/gpu`, which the broker's pods tolerate.
GPUs held by pods the broker does not own (no `gpu-broker/owner=<owner>` label) are counted
per node so the broker plans around them; its own pods are in its ledger already.
Field meanings: https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/node-v1/
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from broker.domain.enums import Health
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, Site, mig_milli
from connectors.kubernetes import labels as L
from connectors.kubernetes.catalog import canonical_model, nominal_memory_gb

JsonDict = dict[str, Any]

_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
_HOLDING_PHASES = frozenset({"Pending", "Running"})
MIG_SLICES_PER_GPU = 7


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("4", "500m", "512Gi") as a number; 0 when unparseable."""
    from kubernetes.utils.quantity import parse_quantity

    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuNode:
    """What the broker needs to know of one GPU node."""

    name: str
    product: str
    model: str
    memory_gb: float
    gpus: int
    mig_profiles: tuple[str, ...]
    shared_units: int  # allocatable nvidia.com/gpu.shared (time-slicing replicas in all)
    offered: bool  # the device plugin offers some GPU resource (else GFD labels only)
    count_label: str | None
    cpu: float
    host_memory_gb: float
    provider_id: str = ""  # spec.providerID: the cloud instance behind the node, if any

    @property
    def key(self) -> tuple[str, float, int, tuple[str, ...], bool]:
        return (self.model, self.memory_gb, self.gpus, self.mig_profiles, self.shared_units > 0)

    def milli(self, resource: str, amount: Decimal) -> int:
        """Milli-GPUs `amount` of an extended resource takes on this node."""
        if resource == L.GPU_RESOURCE:
            return int(amount * MILLI_PER_GPU)
        if resource == L.SHARED_GPU_RESOURCE and self.shared_units:
            return math.ceil(amount * self.gpus * MILLI_PER_GPU / self.shared_units)
        if resource.startswith(L.MIG_RESOURCE_PREFIX):
            try:
                return int(amount) * mig_milli(resource.removeprefix(L.MIG_RESOURCE_PREFIX))
            except ValueError:
                return 0
        return 0


def gpu_node(node: JsonDict) -> GpuNode | None:
    """The node's GPUs, or None when it has none (no GPU resources, no GPU labels)."""
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    alloc: Mapping[str, Any] = (node.get("status") or {}).get("allocatable") or {}
    full = int(quantity(alloc.get(L.GPU_RESOURCE, 0)))
    shared = int(quantity(alloc.get(L.SHARED_GPU_RESOURCE, 0)))
    mig = {
        key.removeprefix(L.MIG_RESOURCE_PREFIX): int(quantity(value))
        for key, value in alloc.items()
        if key.startswith(L.MIG_RESOURCE_PREFIX) and quantity(value) > 0
    }
    count_label = labels.get(L.COUNT_LABEL)
    counted = int(count_label) if count_label and count_label.isdigit() else 0
    if mig:
        slices = sum(_slices(p) * n for p, n in mig.items())
        gpus = counted or full + math.ceil(slices / MIG_SLICES_PER_GPU)
    elif full:
        gpus = full
    elif shared:
        replicas = labels.get(L.REPLICAS_LABEL, "")
        gpus = counted or (shared // int(replicas) if replicas.isdigit() and int(replicas) else 1)
    else:
        gpus = counted  # labelled a GPU node, but the device plugin offers nothing
    product = labels.get(L.PRODUCT_LABEL, "")
    if gpus == 0 and not product:
        return None
    model = canonical_model(product) if product else "UNKNOWN"
    memory = labels.get(L.MEMORY_LABEL, "")
    return GpuNode(
        name=str(meta.get("name", "")),
        product=product,
        model=model,
        memory_gb=nominal_memory_gb(model, int(memory) if memory.isdigit() else None),
        gpus=gpus,
        mig_profiles=tuple(sorted(mig)),
        shared_units=shared,
        offered=bool(full or shared or mig),
        count_label=count_label,
        cpu=float(quantity(alloc.get("cpu", 0))),
        host_memory_gb=float(quantity(alloc.get("memory", 0)) / 2**30),
        provider_id=str((node.get("spec") or {}).get("providerID") or ""),
    )


def _slices(profile: str) -> int:
    head = profile.partition("g.")[0]
    return int(head) if head.isdigit() else 0


def exclusion(node: JsonDict, gpu: GpuNode) -> str | None:
    """Why the broker must not place work on this node, or None."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "NotReady"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in _BLOCKING_EFFECTS and taint.get("key") != L.GPU_TAINT:
            value = f"={taint['value']}" if taint.get("value") else ""
            return f"taint {taint.get('key')}{value}:{taint.get('effect')}"
    if not gpu.offered:
        return "no allocatable GPUs"
    return None


def pod_requests(pod: JsonDict) -> dict[str, Decimal]:
    """The pod's effective GPU requests: the sum over containers, or the largest init
    container's when that is more (the scheduler's rule). Limits stand in for requests."""
    spec = pod.get("spec") or {}

    def gpu_resources(container: JsonDict) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        wanted = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {k: quantity(v) for k, v in wanted.items() if _is_gpu(k)}

    total: dict[str, Decimal] = defaultdict(Decimal)
    for container in spec.get("containers") or []:
        for key, value in gpu_resources(container).items():
            total[key] += value
    for container in spec.get("initContainers") or []:
        for key, value in gpu_resources(container).items():
            total[key] = max(total[key], value)
    return {k: v for k, v in total.items() if v > 0}


def _is_gpu(resource: str) -> bool:
    return resource in (L.GPU_RESOURCE, L.SHARED_GPU_RESOURCE) or resource.startswith(
        L.MIG_RESOURCE_PREFIX
    )


def foreign_usage(
    pods: Iterable[JsonDict], nodes: Mapping[str, GpuNode], owner: str
) -> dict[str, int]:
    """Milli-GPUs held on each node by pending or running pods the broker does not own."""
    used: dict[str, int] = defaultdict(int)
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(L.OWNER_LABEL) == owner:
            continue
        if (pod.get("status") or {}).get("phase") not in _HOLDING_PHASES:
            continue
        node = nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if node is None:
            continue
        used[node.name] += sum(node.milli(k, v) for k, v in pod_requests(pod).items())
    return used


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    site: Site
    pools: tuple[GpuPool, ...]


def build_inventory(
    *,
    site: Site,
    nodes: Iterable[JsonDict],
    pods: Iterable[JsonDict],
    owner: str,
    prices: Mapping[str, float],
    now: datetime,
) -> Inventory:
    """The site's health and pools from the cluster's nodes and pods."""
    usable: dict[str, GpuNode] = {}
    excluded: list[str] = []
    total = 0
    for node in sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name", ""))):
        gpu = gpu_node(node)
        if gpu is None:
            continue
        total += 1
        why = exclusion(node, gpu)
        if why is None:
            usable[gpu.name] = gpu
        else:
            excluded.append(f"{gpu.name} ({why})")
    used = foreign_usage(pods, usable, owner)
    groups: dict[tuple[str, float, int, tuple[str, ...], bool], list[GpuNode]] = defaultdict(list)
    for gpu in usable.values():
        groups[gpu.key].append(gpu)
    ids = _pool_ids(site.name, list(groups))
    pools = tuple(
        _pool(site=site.name, pool_id=ids[key], members=members, used=used, prices=prices, now=now)
        for key, members in sorted(groups.items(), key=lambda kv: ids[kv[0]])
    )
    if excluded:
        shown = ", ".join(excluded[:5]) + (
            f" and {len(excluded) - 5} more" if len(excluded) > 5 else ""
        )
        site = replace(
            site,
            health=Health.DEGRADED,
            health_reason=f"{len(excluded)} of {total} GPU nodes excluded: {shown}",
        )
    else:
        site = replace(site, health=Health.HEALTHY, health_reason="")
    return Inventory(site=site, pools=pools)


def _pool_ids(
    site: str, keys: list[tuple[str, float, int, tuple[str, ...], bool]]
) -> dict[tuple[str, float, int, tuple[str, ...], bool], str]:
    def base(key: tuple[str, float, int, tuple[str, ...], bool]) -> str:
        model, _, gpus, profiles, shared = key
        pid = f"{site}/{model}-{gpus}x"
        if profiles:
            pid += "-mig-" + "-".join(profiles)
        if shared:
            pid += "-shared"
        return pid

    bases = [base(k) for k in keys]
    return {
        key: pid if bases.count(pid) == 1 else f"{pid}-{key[1]:g}gb"
        for key, pid in zip(keys, bases, strict=True)
    }


def _pool(
    *,
    site: str,
    pool_id: str,
    members: list[GpuNode],
    used: Mapping[str, int],
    prices: Mapping[str, float],
    now: datetime,
) -> GpuPool:
    members = sorted(members, key=lambda g: g.name)
    first = members[0]
    capacity = first.gpus * MILLI_PER_GPU
    products = sorted({g.product for g in members})
    counts = {g.count_label for g in members}
    extra = {"nodes": ",".join(g.name for g in members), "product": ",".join(products)}
    if any(g.provider_id for g in members):
        # aligned with "nodes": how the burster finds the node a cloud instance became
        extra["provider_ids"] = ",".join(g.provider_id for g in members)
    if len(counts) == 1 and first.count_label:
        extra["gpu_count"] = first.count_label
    if first.shared_units:
        extra["time_slicing"] = "true"
    return GpuPool(
        id=pool_id,
        site=site,
        gpu_model=first.model,
        gpu_memory_gb=first.memory_gb,
        gpus_per_node=first.gpus,
        nodes=len(members),
        price_on_demand=float(prices.get(first.model, 0.0)),
        mig_profiles=first.mig_profiles,
        cpu_per_node=min(g.cpu for g in members),
        memory_gb_per_node=round(min(g.host_memory_gb for g in members), 1),
        node_allocated=tuple(min(capacity, used.get(g.name, 0)) for g in members),
        updated_at=now,
        extra=extra,
    )
