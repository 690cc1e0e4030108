"""Nodes and pods → the site's GPU pools, health, and what other users hold on each node.

A pool is the set of ready, schedulable GPU nodes that share a model, memory, GPUs per node,
MIG layout and sharing mode; its id `<site>/<model>-<gpus>x` (plus `-mig-<profiles>` or
`-shared`, and the memory when two pools would still collide) depends only on that key,
so it is stable while nodes come and go. Nodes are ordered by name: position i of
`node_names` and `node_use` is the i-th name in `extra["nodes"]`, and of
`extra["provider_ids"]` (the nodes' `spec.providerID`, present when some node has one:
burst instances are found by it).

A node is left out (and the site reported DEGRADED) when it is cordoned, not Ready, or has
a NoSchedule/NoExecute taint the broker's pods would not tolerate: they tolerate
`nvidia.com/gpu` everywhere, and on a node a declared node pool selects, that pool's taints
and tolerations (`node_pools`). Such a node's pools carry the node pool (`GpuPool.node_pool`)
and their id names it (`<site>/<node pool>/<model>-<gpus>x`), so a pool never mixes node
pools; `Inventory.tainted` names each node left out for a taint, and the taint.

`node_use` is what pending and running pods the broker does not own (no
`gpu-broker/owner=<owner>` label) hold on each node, so the broker plans around them; its
own pods are in its ledger already. A pod's requests follow the scheduler's rule: the sum
over its containers, or its largest init container's when that is more, plus the pod's
overhead; a missing request is its limit (what the API server defaults it to). CPU and
memory count for every such pod bound to the node, GPU pods or not. Its GPUs are laid out
on the node's GPUs with `broker.domain.nodes.gpus_for`, pods in name order, whole GPUs
(`nvidia.com/gpu`) first, then each share (one MIG slice, one time-slicing replica) largest
first, best fit; what no longer fits (an over-committed node) fills the GPUs with the most
room, never past 1000 milli-GPUs on one. The GPU numbers are therefore the ledger's slots,
not the physical devices: the API server does not say which GPU a pod got unless a device
plugin annotates the pod, and no such annotation is read yet.
Field meanings: https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/node-v1/
Requests: https://kubernetes.io/docs/concepts/workloads/pods/init-containers/#resource-sharing-within-containers
and https://kubernetes.io/docs/concepts/scheduling-eviction/pod-overhead/
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
from broker.domain.nodes import Demand, NodeUse, add, gpus_for
from connectors.kubernetes import labels as L
from connectors.kubernetes.catalog import canonical_model, nominal_memory_gb
from connectors.kubernetes.node_pools import GPU_TOLERATION, NodePool, Taint, blocking, node_pool_of

JsonDict = dict[str, Any]
# node pool ("": none), model, memory, GPUs per node, MIG profiles, time-sliced
PoolKey = tuple[str, str, float, int, tuple[str, ...], bool]

_HOLDING_PHASES = frozenset({"Pending", "Running"})
MIG_SLICES_PER_GPU = 7
_MIB = 2**20


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
    node_pool: NodePool | None = None  # the declared node pool that selects it

    @property
    def key(self) -> PoolKey:
        pool = self.node_pool.name if self.node_pool else ""
        shared = self.shared_units > 0
        return (pool, self.model, self.memory_gb, self.gpus, self.mig_profiles, shared)

    def gpu_asks(self, requests: Mapping[str, Decimal]) -> list[Demand]:
        """A pod's GPU requests on this node: one ask for its whole GPUs, one per share."""
        asks: list[Demand] = []
        whole = int(requests.get(L.GPU_RESOURCE, 0))
        if whole > 0:
            asks.append(Demand(whole * MILLI_PER_GPU))
        replicas = int(requests.get(L.SHARED_GPU_RESOURCE, 0))
        if replicas > 0 and self.shared_units:
            per = math.ceil(self.gpus * MILLI_PER_GPU / self.shared_units)
            asks += [Demand(min(per, MILLI_PER_GPU))] * replicas
        for resource, amount in requests.items():
            if not resource.startswith(L.MIG_RESOURCE_PREFIX):
                continue
            try:
                per = mig_milli(resource.removeprefix(L.MIG_RESOURCE_PREFIX))
            except ValueError:
                continue
            asks += [Demand(per)] * int(amount)
        return asks


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


def unschedulable(node: JsonDict) -> str | None:
    """Why the scheduler binds no new pod to this node ("cordoned", "NotReady"), or None."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned"
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "NotReady"
    return None


def untolerated(node: JsonDict, gpu: GpuNode) -> Taint | None:
    """The node's first NoSchedule/NoExecute taint the broker's pods would not tolerate
    there (the GPU taint; the taints and tolerations of its node pool), or None."""
    taints = [Taint.of(t) for t in (node.get("spec") or {}).get("taints") or []]
    tolerations = gpu.node_pool.pod_tolerations if gpu.node_pool else (GPU_TOLERATION,)
    return blocking(taints, tolerations)


def exclusion(node: JsonDict, gpu: GpuNode) -> str | None:
    """Why the broker must not place work on this node, or None."""
    why = unschedulable(node)
    if why is not None:
        return why
    taint = untolerated(node, gpu)
    if taint is not None:
        return f"taint {taint}"
    if not gpu.offered:
        return "no allocatable GPUs"
    return None


def pod_requests(pod: JsonDict) -> dict[str, Decimal]:
    """The pod's effective requests: the sum over containers, or the largest init
    container's when that is more, plus the pod's overhead (the scheduler's rule). A missing
    request is the container's limit, as the API server defaults it."""
    spec = pod.get("spec") or {}

    def wanted(container: JsonDict) -> dict[str, Decimal]:
        res = container.get("resources") or {}
        both = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return {k: quantity(v) for k, v in both.items()}

    total: dict[str, Decimal] = defaultdict(Decimal)
    for container in spec.get("containers") or []:
        for key, value in wanted(container).items():
            total[key] += value
    for container in spec.get("initContainers") or []:
        for key, value in wanted(container).items():
            total[key] = max(total[key], value)
    for key, value in (spec.get("overhead") or {}).items():
        total[key] += quantity(value)
    return {k: v for k, v in total.items() if v > 0}


def foreign_use(
    pods: Iterable[JsonDict], nodes: Mapping[str, GpuNode], owner: str
) -> dict[str, NodeUse]:
    """What pending or running pods the broker does not own hold on each of `nodes`."""
    held: dict[str, list[tuple[str, dict[str, Decimal]]]] = defaultdict(list)
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(L.OWNER_LABEL) == owner:
            continue
        if (pod.get("status") or {}).get("phase") not in _HOLDING_PHASES:
            continue
        node = (pod.get("spec") or {}).get("nodeName") or ""
        if node in nodes:
            key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
            held[node].append((key, pod_requests(pod)))
    return {
        name: node_use(nodes[name], sorted(asks, key=lambda a: a[0])) for name, asks in held.items()
    }


def node_use(node: GpuNode, pods: Iterable[tuple[str, Mapping[str, Decimal]]]) -> NodeUse:
    """The node's use by `pods` (name, requests), laid out as the module docstring says."""
    cpu = memory = 0
    whole: list[Demand] = []
    shares: list[Demand] = []
    for _, requests in pods:
        cpu += math.ceil(requests.get("cpu", Decimal(0)) * 1000)
        memory += math.ceil(requests.get("memory", Decimal(0)) / _MIB)
        for ask in node.gpu_asks(requests):
            (shares if ask.shared else whole).append(ask)
    use = NodeUse.empty(node.gpus)
    for ask in whole + sorted(shares, key=lambda d: -d.milli):
        use = _take(use, ask)
    return NodeUse(use.gpus, cpu, memory)


def _take(use: NodeUse, ask: Demand) -> NodeUse:
    """`use` with `ask` on the GPUs `gpus_for` picks; on an over-committed node, what is
    asked fills the GPUs with the most room instead, none past a whole GPU."""
    try:
        return add(use, gpus_for(use, ask), ask)
    except ValueError:
        pass
    per = list(use.gpus)
    left = ask.milli
    for g in sorted(range(len(per)), key=lambda g: (per[g], g)):
        take = min(MILLI_PER_GPU - per[g], left)
        per[g] += take
        left -= take
    return NodeUse(tuple(per), use.cpu_milli, use.memory_mb)


@dataclass(frozen=True, slots=True, kw_only=True)
class Inventory:
    site: Site
    pools: tuple[GpuPool, ...]
    # (node, taint) of each GPU node left out for a taint no declared node pool tolerates
    tainted: tuple[tuple[str, str], ...] = ()


def build_inventory(
    *,
    site: Site,
    nodes: Iterable[JsonDict],
    pods: Iterable[JsonDict],
    owner: str,
    prices: Mapping[str, float],
    now: datetime,
    node_pools: tuple[NodePool, ...] = (),
) -> Inventory:
    """The site's health and pools from the cluster's nodes and pods; `node_pools`: the
    site's declared node pools (see the module docstring)."""
    usable: dict[str, GpuNode] = {}
    excluded: list[str] = []
    tainted: list[tuple[str, str]] = []
    total = 0
    for node in sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name", ""))):
        gpu = gpu_node(node)
        if gpu is None:
            continue
        if node_pools:
            labels = (node.get("metadata") or {}).get("labels") or {}
            gpu = replace(gpu, node_pool=node_pool_of(node_pools, labels))
        total += 1
        why = exclusion(node, gpu)
        if why is None:
            usable[gpu.name] = gpu
        else:
            excluded.append(f"{gpu.name} ({why})")
            if unschedulable(node) is None and (taint := untolerated(node, gpu)) is not None:
                tainted.append((gpu.name, str(taint)))
    used = foreign_use(pods, usable, owner)
    groups: dict[PoolKey, list[GpuNode]] = defaultdict(list)
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
    return Inventory(site=site, pools=pools, tainted=tuple(tainted))


def _pool_ids(site: str, keys: list[PoolKey]) -> dict[PoolKey, str]:
    def base(key: PoolKey) -> str:
        node_pool, model, _, gpus, profiles, shared = key
        pid = f"{site}/{node_pool}/{model}-{gpus}x" if node_pool else f"{site}/{model}-{gpus}x"
        if profiles:
            pid += "-mig-" + "-".join(profiles)
        if shared:
            pid += "-shared"
        return pid

    bases = [base(k) for k in keys]
    return {
        key: pid if bases.count(pid) == 1 else f"{pid}-{key[2]:g}gb"
        for key, pid in zip(keys, bases, strict=True)
    }


def _pool(
    *,
    site: str,
    pool_id: str,
    members: list[GpuNode],
    used: Mapping[str, NodeUse],
    prices: Mapping[str, float],
    now: datetime,
) -> GpuPool:
    members = sorted(members, key=lambda g: g.name)
    first = members[0]
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
        node_use=tuple(used.get(g.name) or NodeUse.empty(g.gpus) for g in members),
        node_names=tuple(g.name for g in members),
        updated_at=now,
        node_pool=first.node_pool.scope if first.node_pool else None,
        extra=extra,
    )
