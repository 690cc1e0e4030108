"""The simulator's run book when no database backs it: one process, tests and tools."""

from __future__ import annotations

from broker.domain.runs import SimRun


class MemoryRunBook:
    """A `RunBook` in this process's memory (what one replica alone may use)."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, str], SimRun] = {}

    async def put(self, run: SimRun) -> SimRun:
        kept = self._runs.get((run.site, run.job_id))
        if kept is not None and kept.run == run.run:
            return kept
        self._runs[(run.site, run.job_id)] = run
        return run

    async def remove(self, *, site: str, job_id: str, run: str | None = None) -> None:
        kept = self._runs.get((site, job_id))
        if kept is not None and (run is None or kept.run == run):
            del self._runs[(site, job_id)]

    async def runs(self, site: str) -> list[SimRun]:
        return [r for (s, _), r in self._runs.items() if s == site]
