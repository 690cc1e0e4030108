"""One run's recorded footprint, as the store keeps it and the reports read it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.domain.enums import Tier


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFootprint:
    job_id: str
    tenant: str
    tier: Tier
    site: str
    grid_zone: str
    gpu_model: str
    gpus: float
    outcome: str  # succeeded, failed, cancelled, preempted
    started_at: datetime
    ended_at: datetime
    energy_kwh: float
    gpu_energy_kwh: float
    intensity_gco2_per_kwh: float | None  # mean over the run; None when no source knew
    intensity_sources: str
    intensity_estimated: bool
    intensity_forecast: bool
    gco2: float | None
    baseline_site: str | None  # where a carbon-blind scheduler would have run it
    baseline_gco2: float | None
    avoided_gco2: float  # max(0, baseline - actual)
    added_gco2: float  # max(0, actual - baseline)
    cost_usd: float
    gpu_hours: float
    service_id: str | None = None  # the service the run was a replica of
