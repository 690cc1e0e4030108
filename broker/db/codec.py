"""Between domain values and the JSON/row shapes the database stores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from broker.db.models import JobEventRow, JobRow, PlacementRow, PoolRow, SiteRow
from broker.domain.conditions import Condition, ConditionType, Reason
from broker.domain.enums import Health, JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, NodePoolScope, NodeUse, Site
from broker.domain.jobs import Job, JobEvent, Placement
from broker.domain.serde import spec_from_dict


def job_from_row(row: JobRow) -> Job:
    return Job(
        id=row.id,
        tenant=row.tenant,
        spec=spec_from_dict(row.spec),
        state=JobState(row.state),
        created_at=row.created_at,
        updated_at=row.updated_at,
        state_reason=row.state_reason,
        version=row.version,
        condition=condition_from_row(row),
    )


def condition_from_row(row: JobRow) -> Condition | None:
    """The job's stored condition; None when it has none (or one this version does not know)."""
    if row.condition_type is None or row.condition_reason is None or row.condition_since is None:
        return None
    try:
        kind, reason = ConditionType(row.condition_type), Reason(row.condition_reason)
    except ValueError:  # written by a newer broker: show nothing rather than fail the read
        return None
    return Condition(
        type=kind, reason=reason, message=row.condition_message or "", since=row.condition_since
    )


def condition_columns(c: Condition | None) -> dict[str, Any]:
    """The `jobs` columns that hold a condition (all null for none)."""
    if c is None:
        return {
            "condition_type": None,
            "condition_reason": None,
            "condition_message": None,
            "condition_since": None,
        }
    return {
        "condition_type": c.type.value,
        "condition_reason": c.reason.value,
        "condition_message": c.message,
        "condition_since": c.since,
    }


def site_from_row(row: SiteRow) -> Site:
    return Site(
        name=row.name,
        kind=SiteKind(row.kind),
        region=row.region,
        location=row.location,
        grid_zone=row.grid_zone,
        private=row.private,
        pue=row.pue,
        health=Health(row.health),
        health_reason=row.health_reason,
    )


def node_pool_to_json(scope: NodePoolScope | None) -> dict[str, Any] | None:
    if scope is None:
        return None
    return {
        "name": scope.name,
        "tiers": sorted(t.value for t in scope.tiers),
        "kinds": sorted(k.value for k in scope.kinds),
    }


def node_pool_from_json(data: dict[str, Any] | None) -> NodePoolScope | None:
    if not data:
        return None
    return NodePoolScope(
        name=data["name"],
        tiers=frozenset(Tier(t) for t in data.get("tiers") or ()),
        kinds=frozenset(JobKind(k) for k in data.get("kinds") or ()),
    )


def pool_from_row(row: PoolRow | Row[Any], node_use: dict[str, NodeUse]) -> GpuPool:
    """From an ORM row or a plain row of the `gpu_pools` columns, with the use of each of
    its nodes by name (a node without one is empty)."""
    names = tuple(row.node_names or ())
    empty = NodeUse.empty(row.gpus_per_node)
    return GpuPool(
        id=row.id,
        site=row.site,
        gpu_model=row.gpu_model,
        gpu_memory_gb=row.gpu_memory_gb,
        gpus_per_node=row.gpus_per_node,
        price_on_demand=row.price_on_demand,
        price_spot=row.price_spot,
        mig_profiles=tuple(row.mig_profiles),
        cpu_per_node=row.cpu_per_node,
        memory_gb_per_node=row.memory_gb_per_node,
        nodes=len(names),
        node_names=names,
        node_use=tuple(node_use.get(n, empty) for n in names),
        updated_at=row.updated_at,
        node_pool=node_pool_from_json(row.node_pool),
    )


def placement_from_row(row: PlacementRow) -> Placement:
    return Placement(
        job_id=row.job_id,
        site=row.site,
        pool_id=row.pool_id,
        gpu_milli=row.gpu_milli,
        price_per_gpu_hour=row.price_per_gpu_hour,
        spot=row.spot,
        estimated_cost_usd=row.estimated_cost_usd,
        estimated_gco2=row.estimated_gco2,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        external_id=row.external_id,
        node_names=tuple(row.node_names or ()),
        node_gpus=tuple(tuple(g) for g in row.node_gpus or ()),
        cpu_milli=row.cpu_milli,
        memory_mb=row.memory_mb,
        borrowed=row.borrowed,
        run=row.run or "",
    )


def event_from_row(row: JobEventRow) -> JobEvent:
    return JobEvent(
        job_id=row.job_id,
        at=row.at,
        from_state=JobState(row.from_state) if row.from_state else None,
        to_state=JobState(row.to_state),
        reason=row.reason,
        detail=row.detail,
    )


def placement_columns(p: Placement, *, at: datetime) -> dict[str, Any]:
    """The `placements` row of a new, active placement made at `at`."""
    return {
        "job_id": p.job_id,
        "site": p.site,
        "pool_id": p.pool_id,
        "gpu_milli": p.gpu_milli,
        "price_per_gpu_hour": p.price_per_gpu_hour,
        "spot": p.spot,
        "estimated_cost_usd": p.estimated_cost_usd,
        "estimated_gco2": p.estimated_gco2,
        "external_id": None,
        "node_names": list(p.node_names),
        "node_gpus": [list(g) for g in p.node_gpus],
        "cpu_milli": p.cpu_milli,
        "memory_mb": p.memory_mb,
        "borrowed": p.borrowed,
        "run": p.run or None,
        "active": True,
        "created_at": at,
        "started_at": None,
        "ended_at": None,
    }
