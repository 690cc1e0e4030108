"""What each scheduled job did last and when it runs next, for the ops endpoint.

Kept in memory by the replica that runs the jobs: a follower's log is empty or stale (it
shows what ran while that replica last led), which the ops endpoint makes clear by showing
the leader status next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"  # leadership was lost mid-run


@dataclass(frozen=True, slots=True)
class JobStatus:
    job: str
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    outcome: Outcome | None = None
    summary: str = ""  # the duty's summary, or the error
    next_run_at: datetime | None = None
    runs: int = 0
    failures: int = 0

    @property
    def last_duration_s(self) -> float | None:
        if self.last_started_at is None or self.last_finished_at is None:
            return None
        if self.last_finished_at < self.last_started_at:
            return None  # still running; the finish time is the previous run's
        return (self.last_finished_at - self.last_started_at).total_seconds()


class RunLog:
    """Per-job status, replaced whole on each change so readers never see half an update."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobStatus] = {}

    def _get(self, job: str) -> JobStatus:
        return self._jobs.get(job) or JobStatus(job=job)

    def started(self, job: str, *, at: datetime) -> None:
        self._jobs[job] = replace(
            self._get(job), last_started_at=at, outcome=Outcome.RUNNING, summary=""
        )

    def finished(self, job: str, *, at: datetime, outcome: Outcome, summary: str) -> None:
        prev = self._get(job)
        self._jobs[job] = replace(
            prev,
            last_finished_at=at,
            outcome=outcome,
            summary=summary,
            runs=prev.runs + 1,
            failures=prev.failures + (outcome is Outcome.FAILED),
        )

    def scheduled(self, job: str, *, next_run_at: datetime | None) -> None:
        self._jobs[job] = replace(self._get(job), next_run_at=next_run_at)

    def snapshot(self) -> dict[str, JobStatus]:
        return dict(self._jobs)
