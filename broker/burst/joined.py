"""The joined cluster's pools as the ledger should see them while burst nodes come and go.

A released instance's node stays Ready in its cluster until the instance has shut down and
the cloud controller deletes the node, a minute or more; it is hidden from the pools meanwhile,
so nothing is placed on capacity being taken away. A pool the cluster no longer reports
(its last burst node left) is kept with no nodes: `FleetStore.sync_site` never deletes a
pool, and a stale node count would let the scheduler place work on nodes that are gone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from broker.domain.fleet import GpuPool


def visible_pools(
    reported: Sequence[GpuPool], *, recorded: Sequence[GpuPool], hidden: Collection[str]
) -> list[GpuPool]:
    """`reported` without the nodes named, or with a provider id, in `hidden`, plus the
    `recorded` pools no longer reported, emptied."""
    out = []
    for pool in reported:
        names = [n for n in pool.extra.get("nodes", "").split(",") if n]
        ids = pool.extra.get("provider_ids", "").split(",")
        ids += [""] * (len(names) - len(ids))
        uses = pool.uses() if len(pool.node_use) == len(names) else ()
        kept = [
            (i, name, pid)
            for i, (name, pid) in enumerate(zip(names, ids, strict=False))
            if name not in hidden and not (pid and pid in hidden)
        ]
        if len(kept) == len(names):
            out.append(pool)
            continue
        extra = dict(pool.extra, nodes=",".join(n for _, n, _ in kept))
        if "provider_ids" in pool.extra:
            extra["provider_ids"] = ",".join(p for _, _, p in kept)
        out.append(
            replace(
                pool,
                nodes=len(kept),
                node_names=tuple(n for _, n, _ in kept),
                node_use=tuple(uses[i] for i, _, _ in kept) if uses else (),
                extra=extra,
            )
        )
    seen = {p.id for p in reported}
    out += [replace(p, nodes=0, node_names=(), node_use=()) for p in recorded if p.id not in seen]
    return out


def same_layout(visible: Sequence[GpuPool], recorded: Sequence[GpuPool]) -> bool:
    """Whether the ledger's pools have the nodes (by name) the cluster shows."""
    have = {p.id: p.names() for p in recorded}
    return all(have.get(p.id) == p.names() for p in visible) and all(
        not names for pid, names in have.items() if pid not in {p.id for p in visible}
    )
