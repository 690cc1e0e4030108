"""Job records as the demand forecaster reads them: one row per job, its last run if any."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from broker.db.models import JobRow, PlacementRow, PoolRow
from broker.db.store_base import StoreBase
from broker.domain.enums import Tier
from broker.domain.fleet import MILLI_PER_GPU


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandRow:
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    estimated_duration_s: float
    gpus: float  # the whole job, all nodes
    gpu_model: str | None  # where its last run was; None when it never ran
    allowed_models: tuple[str, ...]  # from the spec; empty = any
    tier: Tier


class DemandStore(StoreBase):
    async def demand_rows(self, *, since: datetime) -> list[DemandRow]:
        """Jobs submitted at or after `since`, oldest first (deferred and queued included)."""
        last = (
            select(PlacementRow.job_id, func.max(PlacementRow.id).label("pid"))
            .group_by(PlacementRow.job_id)
            .subquery()
        )
        q = (
            select(JobRow, PlacementRow.started_at, PlacementRow.ended_at, PoolRow.gpu_model)
            .outerjoin(last, last.c.job_id == JobRow.id)
            .outerjoin(PlacementRow, PlacementRow.id == last.c.pid)
            .outerjoin(PoolRow, PoolRow.id == PlacementRow.pool_id)
            .where(JobRow.created_at >= since)
            .order_by(JobRow.created_at, JobRow.seq)
        )
        async with self._sessions() as s:
            rows = (await s.execute(q)).all()
        return [
            DemandRow(
                submitted_at=job.created_at,
                started_at=started,
                ended_at=ended,
                estimated_duration_s=float(job.estimated_duration_s),
                gpus=job.gpu_milli / MILLI_PER_GPU,
                gpu_model=model,
                allowed_models=tuple(job.spec.get("resources", {}).get("gpu_models", ())),
                tier=Tier(job.tier),
            )
            for job, started, ended, model in rows
        ]
