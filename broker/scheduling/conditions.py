"""What the engine needs to know about each site for one job: carbon now, latency from origin."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.domain.fleet import Site
from broker.domain.jobs import JobSpec
from broker.domain.latency import LatencyMatrix
from broker.domain.placement import SiteConditions
from carbon.base import CarbonSource

log = logging.getLogger(__name__)


class ConditionsProvider:
    def __init__(self, *, carbon: CarbonSource, latency: LatencyMatrix) -> None:
        self._carbon = carbon
        self._latency = latency

    async def intensities(self, sites: Sequence[Site], *, at: datetime) -> dict[str, float | None]:
        """Current gCO2e/kWh per site (None where unknown); one lookup per grid zone."""
        by_zone: dict[str, float | None] = {}
        for zone in {s.grid_zone for s in sites}:
            reading = await self._carbon.current(zone, at=at)
            by_zone[zone] = reading.gco2_per_kwh if reading is not None else None
        return {s.name: by_zone[s.grid_zone] for s in sites}

    def for_job(
        self, spec: JobSpec, sites: Sequence[Site], intensities: Mapping[str, float | None]
    ) -> dict[str, SiteConditions]:
        return {
            s.name: SiteConditions(
                site=s,
                intensity_gco2_per_kwh=intensities.get(s.name),
                latency_ms=self._latency.rtt(spec.origin, s.location) if spec.origin else None,
            )
            for s in sites
        }
