"""What a serving replay cost and how well it served: the per-policy figures.

* **SLO**: a request is within it when its end-to-end latency (queueing, a cold start
  included, + service) is at most `Slo.absolute_s`, or, without one, at most `slowdown`
  times its own service time (the time it takes with a free slot ready).
* **Replica-hours** count a replica from its start (start-up included: a starting GPU is
  paid for) to its stop; GPU-hours are replica-hours × GPUs per replica.
* **Cost** = GPU-hours × the pool's on-demand price per GPU-hour.
* **Energy and kgCO2e**, as `broker simulate` counts them: GPU board power × utilisation
  × site PUE, integrated hour by hour against the zone's grid intensity.
* **Idle replica-hours**: replica-hours inside the trace's minutes in which no request
  arrives; scale to zero's saving is the share of them a `+zero` variant avoids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from broker.simulation.serving.rates import ServingRates
from broker.simulation.serving.replay import Outcome
from broker.simulation.serving.requests import RequestTrace

__all__ = ["Pricing", "Slo", "idle_minutes", "summarize", "targets"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    slowdown: float = 2.0
    absolute_s: float | None = None

    def met(self, *, latency_s: float, service_s: float) -> bool:
        if self.absolute_s is not None:
            return latency_s <= self.absolute_s + 1e-9
        return latency_s <= self.slowdown * service_s + 1e-9

    def describe(self) -> str:
        if self.absolute_s is not None:
            return f"end-to-end latency ≤ {self.absolute_s * 1000:g} ms"
        return f"end-to-end latency ≤ {self.slowdown:g} × the request's own service time"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pricing:
    """Where the replicas run: price, power, PUE and the zone's hourly intensity."""

    site: str
    grid_zone: str
    price_per_gpu_hour: float
    gpu_power_kw: float
    utilisation: float
    pue: float
    # gCO2e/kWh per hour start, on the replay's clock; hours missing from it take `fallback`
    hourly_gco2_per_kwh: Mapping[datetime, float]
    fallback_gco2_per_kwh: float


def idle_minutes(trace: RequestTrace) -> list[int]:
    """The trace's minutes in which no request arrives."""
    busy = {int(r.at_s // 60) for r in trace.requests}
    return [m for m in range(trace.minutes) if m not in busy]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def _hours_by_clock(
    spans: Sequence[tuple[float, float, float]], *, start: datetime
) -> dict[datetime, float]:
    """Replica-seconds per clock hour."""
    out: dict[datetime, float] = {}
    base = start.replace(minute=0, second=0, microsecond=0)
    offset = (start - base).total_seconds()
    for created, _, stop in spans:
        h = int((created + offset) // 3600)
        while h * 3600 - offset < stop:
            secs = _overlap(created, stop, h * 3600 - offset, (h + 1) * 3600 - offset)
            key = base + timedelta(hours=h)
            out[key] = out.get(key, 0.0) + secs
            h += 1
    return out


def summarize(
    outcome: Outcome,
    *,
    trace: RequestTrace,
    rates: ServingRates,
    slo: Slo,
    pricing: Pricing,
) -> dict[str, Any]:
    """One policy's figures (JSON-ready)."""
    lat = np.array(outcome.latency_s, dtype=float)
    svc = np.array(outcome.service_s, dtype=float)
    served = ~np.isnan(lat)
    within = sum(
        1
        for latency, service in zip(lat[served], svc[served], strict=True)
        if slo.met(latency_s=float(latency), service_s=float(service))
    )
    n = len(lat)
    replica_s = sum(stop - created for created, _, stop in outcome.spans)
    starting_s = sum(ready - created for created, ready, _ in outcome.spans)
    gpus = rates.gpus_per_replica
    gpu_hours = replica_s / 3600 * gpus
    kwh_per_gpu_hour = pricing.gpu_power_kw * pricing.utilisation * pricing.pue
    grams = 0.0
    for hour, secs in _hours_by_clock(outcome.spans, start=trace.start).items():
        intensity = pricing.hourly_gco2_per_kwh.get(hour, pricing.fallback_gco2_per_kwh)
        grams += secs / 3600 * gpus * kwh_per_gpu_hour * intensity
    idle = idle_minutes(trace)
    idle_s = sum(
        _overlap(created, stop, m * 60.0, m * 60.0 + 60.0)
        for m in idle
        for created, _, stop in outcome.spans
    )
    colds = [d for _, d in outcome.cold_starts]
    queueing = lat[served] - svc[served]
    return {
        "requests": n,
        "unserved": int(n - served.sum()),
        "within_slo": _r(within / n if n else 1.0, 5),
        "latency_p50_s": _r(float(np.percentile(lat[served], 50)) if served.any() else 0.0),
        "latency_p99_s": _r(float(np.percentile(lat[served], 99)) if served.any() else 0.0),
        "queueing_mean_s": _r(float(queueing.mean()) if served.any() else 0.0),
        "queueing_p99_s": _r(float(np.percentile(queueing, 99)) if served.any() else 0.0),
        "replica_hours": _r(replica_s / 3600),
        "starting_replica_hours": _r(starting_s / 3600),
        "gpu_hours": _r(gpu_hours),
        "cost_usd": _r(gpu_hours * pricing.price_per_gpu_hour, 2),
        "energy_kwh": _r(gpu_hours * kwh_per_gpu_hour),
        "kgco2e": _r(grams / 1000, 4),
        "cold_starts": len(colds),
        "cold_start_mean_s": _r(sum(colds) / len(colds)) if colds else None,
        "cold_start_max_s": _r(max(colds)) if colds else None,
        "idle_minutes": len(idle),
        "idle_replica_hours": _r(idle_s / 3600, 4),
        "replicas_max": max(outcome.replicas_by_minute, default=0),
        "replicas_mean": _r(replica_s / outcome.end_s if outcome.end_s else 0.0),
        "replay_s": _r(outcome.end_s),
        "decisions_by_mode": dict(sorted(outcome.modes.items())),
        "forecast_method": outcome.forecast_method,
        "policy": outcome.policy,
        "replicas_by_minute": outcome.replicas_by_minute,
    }


def targets(figures: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's three targets, each with the figures that decide it."""
    static = figures.get("static-peak")
    out: dict[str, Any] = {}
    if static is not None and static["gpu_hours"]:
        rows = {}
        for name, f in figures.items():
            if name == "static-peak":
                continue
            saving = 1 - f["gpu_hours"] / static["gpu_hours"]
            rows[name] = {
                "within_slo": f["within_slo"],
                "gpu_hours_saving_vs_static": _r(saving, 4),
                "reached": f["within_slo"] >= 0.99 and saving >= 0.40,
            }
        out["slo_99_with_40pct_fewer_gpu_hours"] = {
            "by_policy": rows,
            "reached": any(r["reached"] for r in rows.values()),
        }
    pairs = []
    for suffix in ("", "+zero"):
        react, pred = figures.get(f"reactive{suffix}"), figures.get(f"reactive+predictive{suffix}")
        if react is None or pred is None:
            continue
        pairs.append(
            {
                "pair": f"reactive+predictive{suffix} vs reactive{suffix}",
                "within_slo": [pred["within_slo"], react["within_slo"]],
                "gpu_hours": [pred["gpu_hours"], react["gpu_hours"]],
                "reached": pred["within_slo"] >= react["within_slo"]
                and pred["gpu_hours"] <= react["gpu_hours"] + 1e-9,
            }
        )
    if pairs:
        out["predictive_no_worse_no_dearer"] = {
            "pairs": pairs,
            "reached": all(p["reached"] for p in pairs),
        }
    zero = []
    for base in ("reactive", "reactive+predictive"):
        a, b = figures.get(base), figures.get(f"{base}+zero")
        if a is None or b is None:
            continue
        saving = (
            1 - b["idle_replica_hours"] / a["idle_replica_hours"]
            if a["idle_replica_hours"]
            else None
        )
        zero.append(
            {
                "pair": f"{base}+zero vs {base}",
                "idle_replica_hours": [b["idle_replica_hours"], a["idle_replica_hours"]],
                "saving": None if saving is None else _r(saving, 4),
                "reached": saving is not None and saving >= 0.90,
            }
        )
    if zero:
        idle = next(iter(figures.values()))["idle_minutes"]
        out["scale_to_zero_saves_90pct_idle"] = {
            "idle_minutes": idle,
            "pairs": zero,
            "reached": None if not idle else any(z["reached"] for z in zero),
        }
    return out


def _r(x: float, digits: int = 3) -> float:
    return round(x, digits) if math.isfinite(x) else x
