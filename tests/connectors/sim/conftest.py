"""The simulator's harness: no provider behind it, so no credentials to reject or calls to
throttle; its jobs finish on their own (a failing one carries SIM_EXIT_CODE)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker.config import load_settings
from broker.domain.clock import SystemClock
from broker.domain.jobs import Job, Placement
from connectors.base import BuildContext
from connectors.sim.connector import SimConnector
from connectors.threads import Blocking
from tests.conftest import DEMO_CONFIG
from tests.connectors.contract import T0


class SimHarness:
    secret = "no-secret-in-the-simulator"

    def __init__(self, connector: SimConnector) -> None:
        self.connector = connector
        self._jobs: dict[str, Job] = {}

    async def placement(self, job: Job) -> Placement:
        pool = (await self.connector.inventory()).pools[0]
        demand = job.spec.resources.demand
        return Placement(
            job_id=job.id,
            site=pool.site,
            pool_id=pool.id,
            gpu_milli=job.spec.resources.total_milli,
            price_per_gpu_hour=pool.price_on_demand,
            spot=False,
            estimated_cost_usd=0.0,
            estimated_gco2=None,
            created_at=T0,
            node_names=pool.names()[:1],
            node_gpus=pool.gpus_on((0,), demand),
            cpu_milli=demand.cpu_milli,
            memory_mb=demand.memory_mb,
        )

    async def remote_ids(self) -> set[str]:
        return set((await self.connector.owned()).values())

    async def finish(self, external_id: str, *, succeeded: bool) -> None:
        raise NotImplementedError("end a simulated job early: it ends on its own")

    def reject_credentials(self) -> None:
        raise NotImplementedError("reject credentials: the simulator has none")

    def throttle(self, calls: int) -> None:
        raise NotImplementedError("throttle: the simulator has no provider")


@pytest.fixture
async def harness() -> AsyncIterator[SimHarness]:
    # slow enough that nothing finishes while a test looks at it
    settings = load_settings(DEMO_CONFIG, overrides={"sim.speed": 1.0, "sim.start_delay_s": 0.0})
    with Blocking(1) as pool:
        context = BuildContext(
            config_dir=settings.config_dir, blocking=pool, clock=SystemClock(), sim=settings.sim
        )
        connector = SimConnector.from_settings(site=settings.sites[0], context=context)
        await connector.start()
        try:
            yield SimHarness(connector)
        finally:
            await connector.close()
