"""Run footprints and their carbon-blind counterfactual, against hand calculations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.engine import Engine
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import Job, JobSpec, Placement, Resources, Workload
from broker.domain.latency import LatencyMatrix
from broker.scheduling.footprints import Accountant
from broker.scheduling.settings import SchedulerSettings, engine_settings
from carbon.base import IntensityReading

SUBMIT = datetime(2022, 3, 7, 8, tzinfo=UTC)
START = SUBMIT + timedelta(hours=4)  # deferred to a cleaner hour


class Hourly:
    """A carbon source with one value per (zone, hour of day)."""

    name = "hand"

    def __init__(self, values: dict[str, dict[int, float]]) -> None:
        self._values = values

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        got = await self.forecast(zone, start=at, end=at + timedelta(hours=1))
        return got[0] if got else None

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        if zone not in self._values:
            return []
        out, t = [], start.replace(minute=0, second=0, microsecond=0)
        while t < end:
            out.append(
                IntensityReading(
                    zone=zone, at=t, gco2_per_kwh=self._values[zone][t.hour], source=self.name
                )
            )
            t += timedelta(hours=1)
        return out


def site(name: str, zone: str, pue: float) -> Site:
    return Site(
        name=name,
        kind=SiteKind.SIM,
        region=name,
        location=f"sim:{name}",
        grid_zone=zone,
        private=False,
        pue=pue,
    )


def pool(site_name: str, price: float) -> GpuPool:
    return GpuPool(
        id=f"{site_name}/H100",
        site=site_name,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=2,
        price_on_demand=price,
    )


def job() -> Job:
    spec = JobSpec(
        name="train",
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=2, cpu=8, memory_gb=64),
        workload=Workload(image="i"),
        estimated_duration_s=7200,
    )
    return Job(
        id="job-1",
        tenant="vision",
        spec=spec,
        state=JobState.SUCCEEDED,
        created_at=SUBMIT,
        updated_at=SUBMIT,
    )


async def test_a_run_is_counted_at_its_site_and_window_and_against_the_blind_choice() -> None:
    # "clean" is dearer; a carbon-blind scheduler picks "cheap". Hours 8-9 are dirty in both
    # zones, hours 12-13 clean: the broker ran at "clean" from 12:00 to 13:30.
    sites = {"clean": site("clean", "NO", pue=1.1), "cheap": site("cheap", "PL", pue=1.5)}
    pools = {p.site: p for p in (pool("clean", price=3.0), pool("cheap", price=2.0))}
    carbon = Hourly(
        {
            "NO": {h: (40.0 if h >= 12 else 80.0) for h in range(24)},
            "PL": {h: (600.0 if h < 10 else 500.0) for h in range(24)},
        }
    )
    accountant = Accountant(
        engine=Engine(engine_settings(SchedulerSettings())),
        carbon=carbon,
        latency=LatencyMatrix({}),
    )
    placement = Placement(
        job_id="job-1",
        site="clean",
        pool_id="clean/H100",
        gpu_milli=2000,
        price_per_gpu_hour=3.0,
        spot=False,
        estimated_cost_usd=0.0,
        estimated_gco2=None,
        created_at=SUBMIT,
        started_at=START,
        ended_at=START + timedelta(hours=1, minutes=30),
    )
    run = await accountant.run_footprint(
        job=job(),
        placement=placement,
        outcome="succeeded",
        sites=sites,
        pools={p.id: p for p in pools.values()},
    )
    assert run is not None
    # GPUs 0.7 kW x 0.8 x 2 x 1.5 h = 1.68 kWh; host (8 x 2.12 + 64 x 0.392) W x 1.5 h =
    # 0.063072 kWh; x PUE
    clean_kwh, cheap_kwh = 1.743072 * 1.1, 1.743072 * 1.5
    assert run.energy_kwh == pytest.approx(clean_kwh)
    assert run.gpu_energy_kwh == pytest.approx(1.68 * 1.1)
    assert run.intensity_gco2_per_kwh == pytest.approx(40.0)
    assert run.gco2 == pytest.approx(clean_kwh * 40)
    # blind: "cheap" from submission (08:00) for 1.5 h: 600 g/kWh all along
    assert run.baseline_site == "cheap"
    assert run.baseline_gco2 == pytest.approx(cheap_kwh * 600)
    assert run.avoided_gco2 == pytest.approx(cheap_kwh * 600 - clean_kwh * 40)
    assert run.added_gco2 == 0
    assert run.cost_usd == pytest.approx(3.0 * 2 * 1.5)
    assert run.gpu_hours == pytest.approx(3.0)
    assert (run.intensity_sources, run.intensity_estimated) == ("hand", False)


async def test_a_run_that_never_started_has_no_footprint() -> None:
    accountant = Accountant(
        engine=Engine(engine_settings(SchedulerSettings())),
        carbon=Hourly({}),
        latency=LatencyMatrix({}),
    )
    placement = Placement(
        job_id="job-1",
        site="clean",
        pool_id="clean/H100",
        gpu_milli=2000,
        price_per_gpu_hour=3.0,
        spot=False,
        estimated_cost_usd=0.0,
        estimated_gco2=None,
        created_at=SUBMIT,
        ended_at=START,
    )
    assert (
        await accountant.run_footprint(
            job=job(), placement=placement, outcome="cancelled", sites={}, pools={}
        )
        is None
    )
