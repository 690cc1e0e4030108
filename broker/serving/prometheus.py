"""Service load from a Prometheus server: each service's `autoscaling.load_query`, evaluated
as an instant query (`GET /api/v1/query`) on every controller tick.

The answer's shapes follow the HTTP API (https://prometheus.io/docs/prometheus/latest/
querying/api/): `{"status": "success", "data": {"resultType": "vector" | "scalar", ...}}`,
errors as `{"status": "error", "errorType": ..., "error": ...}` with a 4xx/5xx status. A
vector's samples are summed (the query should aggregate; a vector of several series is
read as their total). An empty vector, an error, a timeout or a non-number is *missing
data* (None), never zero: the autoscaler then keeps the replicas it has and never scales to
zero on it. Write `sum(rate(...)) or vector(0)` when no series means no traffic.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from typing import Any

import aiohttp

from broker.domain.services import Service
from redaction import redact

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0  # one warning a minute per service while its query fails


class PrometheusLoad:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        url: str,
        timeout_s: float,
        token: str | None = None,
    ) -> None:
        self._session = session
        self._url = url.rstrip("/") + "/api/v1/query"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._warned: dict[str, float] = {}

    async def observe(self, service: Service, *, now: datetime) -> float | None:
        query = service.spec.load_query
        if not query:
            return None
        try:
            async with self._session.get(
                self._url,
                params={"query": query, "time": f"{now.timestamp():.3f}"},
                headers=self._headers,
                timeout=self._timeout,
            ) as resp:
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._warn(service, f"{type(exc).__name__}")
            return None
        if not isinstance(body, dict) or body.get("status") != "success":
            why = body.get("error", "no answer") if isinstance(body, dict) else "not JSON"
            self._warn(service, f"HTTP {resp.status}: {why}")
            return None
        value = _total(body.get("data"))
        if value is None:
            self._warn(service, "no sample (empty result)")
        return value

    def _warn(self, service: Service, why: str) -> None:
        last = self._warned.get(service.id, -math.inf)
        if time.monotonic() - last >= _WARN_EVERY_S:
            self._warned[service.id] = time.monotonic()
            log.warning("service %s: no load from Prometheus: %s", service.id, redact(why)[:300])


def _total(data: Any) -> float | None:
    """The sum of an instant vector, or a scalar; None when there is no finite number."""
    if not isinstance(data, dict):
        return None
    kind, result = data.get("resultType"), data.get("result")
    samples: list[Any]
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        samples = [result]
    elif kind == "vector" and isinstance(result, list):
        samples = [r.get("value") for r in result if isinstance(r, dict)]
    else:
        return None
    values = []
    for sample in samples:
        try:
            v = float(sample[1])
        except (TypeError, ValueError, IndexError):
            return None
        if not math.isfinite(v) or v < 0:
            return None
        values.append(v)
    return sum(values) if values else None
