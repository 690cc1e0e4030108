"""Where a service's load comes from: what the autoscaler reads each tick.

`TraceLoad` is the demo fleet's: every service on it gets the requests per minute of a
replayed trace (`data/azure-llm-2023-per-minute.csv` by default), played `speed` trace
seconds per wall second from the service's creation and looped, and scaled so the busiest
minute is `peak` of what `max_replicas` replicas take at the service's target. So a newcomer
sees replicas come and go, and a service with `min_replicas: 0` go to zero in the trace's
idle minutes. A service whose workload env has `SIM_LOAD=<number>` gets that constant load
instead (`SIM_LOAD=off` or `0`: none), for demos and tests.

The load is requests per second for an `rps` service; for a `concurrency` one it is the
requests in flight, taken as the rate times one second of service (Little's law with a
stated 1 s mean service time).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from broker.domain.services import Service

SHIPPED_TRACE = Path(__file__).resolve().parent / "data" / "azure-llm-2023-per-minute.csv"


class LoadSource(Protocol):
    async def observe(self, service: Service, *, now: datetime) -> float | None:
        """The service's load now in its metric; None when it cannot be read."""


def read_trace(path: Path, column: str) -> list[float]:
    """Requests per minute, one per minute of the trace."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        raise ValueError(f"{path} has no column {column!r}")
    return [float(r[column]) for r in rows]


class TraceLoad:
    def __init__(self, *, per_minute: Sequence[float], speed: float, peak: float) -> None:
        if not per_minute or max(per_minute) <= 0:
            raise ValueError("the trace needs at least one busy minute")
        self._per_minute = list(per_minute)
        self._busiest = max(per_minute)
        self._speed = speed
        self._peak = peak

    async def observe(self, service: Service, *, now: datetime) -> float | None:
        spec = service.spec
        fixed = spec.workload.env.get("SIM_LOAD")
        if fixed is not None:
            try:
                return max(0.0, float(fixed))
            except ValueError:
                return 0.0  # "off", or anything not a number
        played_s = max(0.0, (now - service.created_at).total_seconds()) * self._speed
        minute = int(played_s // 60) % len(self._per_minute)
        share = self._per_minute[minute] / self._busiest
        return share * self._peak * spec.max_replicas * spec.target
