"""Each run's footprint, worked out when it ends, and its carbon-blind counterfactual.

The counterfactual answers "what would this job have emitted had it been scheduled
carbon-blind": at the site the broker's own ranking picks with the carbon weight set to
zero (the tier's cost and latency weights kept, capacity ignored, the fleet as it is when
the run ends), started at submission time and running as long as the job actually ran.
Its energy uses that site's GPU model and PUE. `carbon.accounting.Footprint` splits the
difference into avoided and added emissions, each never negative.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from broker.domain.engine import Engine
from broker.domain.fleet import MILLI_PER_GPU, GpuPool, Site
from broker.domain.footprint import RunFootprint
from broker.domain.jobs import Job, Placement
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.scheduling.conditions import HourlyTable
from carbon.accounting import (
    Energy,
    EnergyModel,
    WindowIntensity,
    footprint,
    job_energy,
    window_intensity,
)
from carbon.base import CarbonSource
from carbon.power import UnknownGpuModel

log = logging.getLogger(__name__)

_NO_CARBON = HourlyTable({})  # the counterfactual ranks without carbon


class Accountant:
    def __init__(
        self,
        *,
        engine: Engine,
        carbon: CarbonSource,
        latency: LatencyMatrix,
        energy: EnergyModel | None = None,
    ) -> None:
        self._engine = engine
        self._carbon = carbon
        self._latency = latency
        self._energy = energy or EnergyModel(gpu_utilisation=engine.settings.gpu_utilisation)

    async def run_footprint(
        self,
        *,
        job: Job,
        placement: Placement,
        outcome: str,
        sites: Mapping[str, Site],
        pools: Mapping[str, GpuPool],
    ) -> RunFootprint | None:
        """The footprint of a run that started and ended; None for one that never started."""
        start, end = placement.started_at, placement.ended_at
        site, pool = sites.get(placement.site), pools.get(placement.pool_id)
        if start is None or end is None or site is None or pool is None:
            return None
        seconds = max(0.0, (end - start).total_seconds())
        gpus = placement.gpu_milli / MILLI_PER_GPU
        energy = self._run_energy(job, pool=pool, site=site, seconds=seconds, gpus=gpus)
        intensity = await self._intensity(site.grid_zone, start=start, end=end)
        blind = await self._counterfactual(
            job, sites=sites, pools=pools, seconds=seconds, gpus=gpus, at=end
        )
        base_site, base_energy, base_intensity = blind if blind else (None, None, None)
        fp = (
            footprint(
                energy=energy,
                intensity=intensity,
                baseline_energy=base_energy,
                baseline_intensity=base_intensity,
            )
            if intensity is not None
            else None
        )
        return RunFootprint(
            job_id=job.id,
            tenant=job.tenant,
            tier=job.spec.tier,
            site=site.name,
            grid_zone=site.grid_zone,
            gpu_model=pool.gpu_model,
            gpus=gpus,
            outcome=outcome,
            started_at=start,
            ended_at=end,
            energy_kwh=energy.total_kwh,
            gpu_energy_kwh=energy.gpu_kwh,
            intensity_gco2_per_kwh=intensity.gco2_per_kwh if intensity else None,
            intensity_sources=",".join(intensity.sources) if intensity else "",
            intensity_estimated=intensity.estimated if intensity else True,
            intensity_forecast=intensity.forecast if intensity else False,
            gco2=fp.gco2 if fp else None,
            baseline_site=base_site,
            baseline_gco2=fp.baseline_gco2 if fp else None,
            avoided_gco2=fp.avoided_g if fp else 0.0,
            added_gco2=fp.added_g if fp else 0.0,
            cost_usd=placement.price_per_gpu_hour * gpus * seconds / 3600,
            gpu_hours=gpus * seconds / 3600,
            service_id=job.spec.service_id,
        )

    def _run_energy(
        self, job: Job, *, pool: GpuPool, site: Site, seconds: float, gpus: float
    ) -> Energy:
        res = job.spec.resources
        try:
            return job_energy(
                gpu_model=pool.gpu_model,
                gpus=gpus,
                cpus=res.cpu * res.nodes,
                memory_gb=res.memory_gb * res.nodes,
                seconds=seconds,
                pue=site.pue,
                model=self._energy,
            )
        except UnknownGpuModel:
            log.warning("no board power known for %s; counting its host share only", pool.gpu_model)
            host = job_energy(
                gpu_model="H100",
                gpus=0.0,
                cpus=res.cpu * res.nodes,
                memory_gb=res.memory_gb * res.nodes,
                seconds=seconds,
                pue=site.pue,
                model=self._energy,
            )
            return Energy(gpu_kwh=0.0, host_kwh=host.host_kwh)

    async def _intensity(
        self, zone: str, *, start: datetime, end: datetime
    ) -> WindowIntensity | None:
        lo = start.replace(minute=0, second=0, microsecond=0)
        until = max(end, lo + timedelta(hours=1))
        readings = await self._carbon.forecast(zone, start=lo, end=until)
        if not readings:
            current = await self._carbon.current(zone, at=start)
            readings = [current] if current is not None else []
        return window_intensity(readings, start=start, end=end)

    async def _counterfactual(
        self,
        job: Job,
        *,
        sites: Mapping[str, Site],
        pools: Mapping[str, GpuPool],
        seconds: float,
        gpus: float,
        at: datetime,
    ) -> tuple[str, Energy, WindowIntensity] | None:
        w = self._engine.weights_for(job.spec)
        blind = (
            Weights(cost=w.cost, latency=w.latency, carbon=0.0)
            if w.cost + w.latency > 0
            else Weights(cost=1.0, latency=0.0, carbon=0.0)
        )
        spec = replace(job.spec, objective=blind)
        conds = self._engine.conditions(
            spec, sites=list(sites.values()), latency=self._latency, carbon=_NO_CARBON, now=at
        )
        best = self._engine.evaluate(
            spec, pools=list(pools.values()), conditions=conds, ignore_capacity=True, explain=False
        ).best
        if best is None:
            return None
        site, pool = sites[best.site], pools[best.pool_id]
        energy = self._run_energy(job, pool=pool, site=site, seconds=seconds, gpus=gpus)
        start = job.created_at
        intensity = await self._intensity(
            site.grid_zone, start=start, end=start + timedelta(seconds=seconds)
        )
        if intensity is None:
            return None
        return site.name, energy, intensity
