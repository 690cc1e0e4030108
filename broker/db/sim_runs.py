"""The simulator's run book in the database, so every replica sees each simulated run.

`put` is an insert that keeps an existing row of the same run (a retried dispatch, or
a dispatch racing a takeover's adoption) and replaces a row of an earlier run of the job:
one upsert, `ON CONFLICT (site, job_id) DO UPDATE ... WHERE run <> new run`, on both
databases.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.db.models import SimRunRow
from broker.domain.runs import SimRun

_table = cast(Table, SimRunRow.__table__)


class DbRunBook:
    """A `broker.domain.runs.RunBook` over the `sim_runs` table."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def put(self, run: SimRun) -> SimRun:
        values = {
            "site": run.site,
            "job_id": run.job_id,
            "run": run.run,
            "dispatched_at": run.dispatched_at,
            "start_delay_s": run.start_delay_s,
            "run_s": run.run_s,
            "exit_code": run.exit_code,
        }
        async with self._sessions.begin() as s:
            dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(_table).values(**values)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[_table.c.site, _table.c.job_id],
                    set_={k: stmt.excluded[k] for k in values if k not in ("site", "job_id")},
                    where=_table.c.run != stmt.excluded.run,
                )
            )
            row = (
                await s.execute(
                    select(SimRunRow).where(
                        SimRunRow.site == run.site, SimRunRow.job_id == run.job_id
                    )
                )
            ).scalar_one()
            return _run(row)

    async def remove(self, *, site: str, job_id: str, run: str | None = None) -> None:
        stmt = delete(SimRunRow).where(SimRunRow.site == site, SimRunRow.job_id == job_id)
        if run is not None:
            stmt = stmt.where(SimRunRow.run == run)
        async with self._sessions.begin() as s:
            await s.execute(stmt)

    async def runs(self, site: str) -> list[SimRun]:
        async with self._sessions() as s:
            rows = await s.scalars(select(SimRunRow).where(SimRunRow.site == site))
            return [_run(r) for r in rows]


def _run(row: SimRunRow) -> SimRun:
    return SimRun(
        site=row.site,
        job_id=row.job_id,
        run=row.run,
        dispatched_at=row.dispatched_at,
        start_delay_s=row.start_delay_s,
        run_s=row.run_s,
        exit_code=row.exit_code,
    )
