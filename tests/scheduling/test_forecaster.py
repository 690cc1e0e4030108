"""The demand forecaster fed from the job table (both databases), against private capacity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from broker.db.connection import create_engine, session_factory, upgrade
from broker.db.repository import Store
from broker.demand import ANY_MODEL, ForecastConfig, ForecastMethod
from broker.domain.clock import ManualClock
from broker.domain.enums import JobKind, JobState, SiteKind, Tier
from broker.domain.fleet import GpuPool, Site
from broker.domain.jobs import JobSpec, Placement, Resources, Workload
from broker.scheduling.forecaster import DemandService

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
DAYS = 15
PRIVATE = Site(
    name="lab",
    kind=SiteKind.SIM,
    region="lab",
    location="aws:us-east-1",
    grid_zone="US-MIDA-PJM",
    private=True,
)
CLOUD = Site(
    name="cloud",
    kind=SiteKind.SIM,
    region="us-east-1",
    location="aws:us-east-1",
    grid_zone="US-MIDA-PJM",
    private=False,
)


def pool(site: Site, nodes: int) -> GpuPool:
    return GpuPool(
        id=f"{site.name}/H100",
        site=site.name,
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=nodes,
        price_on_demand=2.0,
    )


def spec(*, nodes: int, models: tuple[str, ...] = ("H100",)) -> JobSpec:
    return JobSpec(
        name="daily",
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=8, nodes=nodes, gpu_models=models),
        workload=Workload(image="img"),
        estimated_duration_s=2 * 3600,
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[Store, ManualClock]]:
    engine = create_engine(database_url)
    await upgrade(engine)
    clock = ManualClock(T0)
    s = Store(sessions=session_factory(engine), clock=clock)
    await s.sync_site(PRIVATE, [pool(PRIVATE, nodes=1)])
    await s.sync_site(CLOUD, [pool(CLOUD, nodes=4)])
    yield s, clock
    await engine.dispose()


async def test_a_daily_peak_beyond_private_capacity_is_a_shortfall_at_that_hour(
    store: tuple[Store, ManualClock],
) -> None:
    s, clock = store
    # Every day at 09:00 a 16-GPU job arrives; the first one ran (on the cloud pool).
    for day in range(DAYS):
        clock.advance((day * 24 + 9) * 3600 - (clock.now() - T0).total_seconds())
        job, _ = await s.create_job(tenant="t", spec=spec(nodes=2))
        if day == 0:
            placed = await s.place(
                job=job,
                placement=Placement(
                    job_id=job.id,
                    site="cloud",
                    pool_id="cloud/H100",
                    gpu_milli=16_000,
                    price_per_gpu_hour=2.0,
                    spot=False,
                    estimated_cost_usd=64.0,
                    estimated_gco2=None,
                    created_at=clock.now(),
                    node_names=("0", "1"),
                    node_gpus=(tuple(range(8)),) * 2,
                    cpu_milli=job.spec.resources.demand.cpu_milli,
                    memory_mb=job.spec.resources.demand.memory_mb,
                ),
                reason="test",
            )
            assert placed is not None
            assert await s.mark_running(job.id, at=clock.now())
            done = clock.now() + timedelta(hours=2)
            await s.finish(job.id, state=JobState.SUCCEEDED, reason="done", at=done)
    # And one job that takes any model, which the private GPUs' spare hours absorb.
    await s.create_job(tenant="t", spec=spec(nodes=1, models=()))
    clock.advance(24 * 3600)

    rows = await s.demand_rows(since=T0)
    assert len(rows) == DAYS + 1
    first = rows[0]
    assert first.gpu_model == "H100" and first.gpus == 16 and first.started_at is not None
    assert rows[-1].gpu_model is None and rows[-1].allowed_models == ()

    config = ForecastConfig(min_history_hours=240, train_window_hours=336, min_samples_leaf=20)
    demand = DemandService(store=s, clock=clock, quantile=0.9, config=config)
    summary = await demand.retrain()
    assert "gbm_quantile" in summary
    outlook = await demand.outlook(hours=24)
    assert outlook.method is ForecastMethod.GBM_QUANTILE
    assert outlook.private_gpus == {"H100": 8.0}  # the cloud pool is not private
    by_hour = {s.at.hour: s for s in outlook.shortfalls if s.gpu_model == "H100"}
    assert len(by_hour) == 24
    # 16 GPUs wanted at 09:00 against 8 private: about 8 short; none at night.
    assert 4 <= by_hour[9].shortfall <= 16
    assert by_hour[3].shortfall == 0
    assert outlook.peak_shortfall()["H100"] == max(s.shortfall for s in by_hour.values())
    assert all(s.gpu_model != ANY_MODEL or s.capacity >= 0 for s in outlook.shortfalls)


async def test_with_no_history_the_outlook_is_seasonal_naive_and_empty(
    store: tuple[Store, ManualClock],
) -> None:
    s, clock = store
    demand = DemandService(store=s, clock=clock)
    outlook = await demand.outlook(hours=6)
    assert outlook.method is ForecastMethod.SEASONAL_NAIVE
    assert outlook.shortfalls == () and outlook.peak_shortfall() == {}
    with pytest.raises(ValueError, match="hours must be in"):
        await demand.outlook(hours=0)
