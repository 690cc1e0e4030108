"""A simulated site's runs, kept where every broker replica sees them.

On Kubernetes the cluster is the state: whichever replica follows a site lists and watches
the same Jobs, and a delete from any replica stops the run. The demo fleet's simulator has
no cluster, so it keeps its runs in a `RunBook` the broker backs with its database
(`broker.db.sim_runs`): a dispatch writes a `SimRun`, a cancel deletes it, and the replica
that follows the site simulates every run in the book. A run's whole course follows from
its record (when it was dispatched, its start delay, how long it runs, how it ends), so a
replica taking over a site resumes each run exactly where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class SimRun:
    site: str
    job_id: str
    run: str  # the placement's run id (`Placement.run`)
    dispatched_at: datetime
    start_delay_s: float  # dispatch to RUNNING
    run_s: float  # RUNNING to the end
    exit_code: int = 0  # 0 succeeds; anything else fails with that code

    @property
    def running_at(self) -> datetime:
        return self.dispatched_at + timedelta(seconds=self.start_delay_s)

    @property
    def ends_at(self) -> datetime:
        return self.running_at + timedelta(seconds=self.run_s)


class RunBook(Protocol):
    """Where a simulated site's runs live; the same for every replica of a deployment."""

    async def put(self, run: SimRun) -> SimRun:
        """Record `run` unless the job already has this run (a retried dispatch); returns
        the record as kept. A different run of the same job replaces the old one."""

    async def remove(self, *, site: str, job_id: str, run: str | None = None) -> None:
        """Forget the job's run (only if it is `run`, when given); a missing one is fine."""

    async def runs(self, site: str) -> list[SimRun]:
        """Every run the site has, in no particular order."""
