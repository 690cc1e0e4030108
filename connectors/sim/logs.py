"""The demo fleet's job output: synthetic lines that follow from the run's record.

A simulated job runs nothing, so there is no output to read; the sim connector makes up a
few deterministic lines from its run (`SimRun`): dispatched, started, progress every tenth
of the run, and the exit code, each stamped with the time it is due. The same run always
gives the same lines, on any replica, and a line is shown only once its time has come, so
following a run streams its lines as it "runs". A run stopped early (cancelled or
preempted: its placement ended before the run would) ends with a "stopped" line. A
service's replica serves until stopped, so it has no progress lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.domain.jobs import Job, Placement
from broker.domain.runs import SimRun

PROGRESS_STEPS = 10


@dataclass(frozen=True, slots=True)
class Line:
    at: datetime
    text: str


def synthetic_lines(*, job: Job, placement: Placement, run: SimRun) -> list[Line]:
    """Every line of the run, in order, with the time each is due."""

    def line(at: datetime, text: str) -> Line:
        return Line(at, f"{at.isoformat()} [sim] {text}")

    res = job.spec.resources
    lines = [
        line(run.dispatched_at, f"job {job.id} (run {run.run}) dispatched to {placement.pool_id}"),
        line(
            run.running_at,
            f"started {job.spec.workload.image} on {res.nodes} node(s) x {res.gpus} GPU(s)",
        ),
    ]
    if job.spec.service_id is None:
        for step in range(1, PROGRESS_STEPS):
            at = run.running_at + timedelta(seconds=run.run_s * step / PROGRESS_STEPS)
            lines.append(line(at, f"progress {100 * step // PROGRESS_STEPS}%"))
        lines.append(line(run.ends_at, f"exited with code {run.exit_code}"))
    ended = placement.ended_at
    if ended is not None and ended < run.ends_at:
        lines = [x for x in lines if x.at <= ended]
        lines.append(line(ended, f"stopped: the job is {job.state.value}"))
    return lines
