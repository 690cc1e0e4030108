"""The broker's answers to the scheduled jobs (`broker.duties.contract.Duties`).

Each method does one periodic task over the live parts and returns a one-line summary for the
scheduler's log and `GET /v1/admin/schedule`. With bursting off, capacity planning still
forecasts (so shortfalls show in the log and the API) but provisions nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from broker.db.repository import Store
from broker.domain.clock import Clock
from broker.scheduling.forecaster import DemandService
from broker.scheduling.inventory import Visible, refresh_inventory
from carbon.wiring import CarbonSetup
from connectors.base import Connector


class Capacity(Protocol):
    """Burst and reclaim (`broker.burst`), when configured."""

    async def plan_capacity(self) -> str: ...

    async def reclaim_idle(self) -> str: ...


class BrokerDuties:
    def __init__(
        self,
        *,
        store: Store,
        connectors: Mapping[str, Connector],
        carbon: CarbonSetup,
        demand: DemandService,
        capacity: Capacity | None,
        clock: Clock,
        visible: Visible | None = None,
        outlook_hours: int = 24,
    ) -> None:
        self._store = store
        self._connectors = connectors
        self._carbon = carbon
        self._demand = demand
        self._capacity = capacity
        self._clock = clock
        self._outlook_hours = outlook_hours
        self._visible = visible

    async def retrain_forecast(self) -> str:
        return await self._demand.retrain()

    async def plan_capacity(self) -> str:
        if self._capacity is not None:
            return await self._capacity.plan_capacity()
        outlook = await self._demand.outlook(hours=self._outlook_hours)
        short = {m: g for m, g in outlook.peak_shortfall().items() if g > 0}
        if not short:
            return f"no shortfall forecast in the next {outlook.hours} h; bursting is off"
        listed = ", ".join(f"{m} {g:.0f} GPUs" for m, g in sorted(short.items()))
        return f"forecast shortfall at peak: {listed}; bursting is off, nothing provisioned"

    async def refresh_carbon(self) -> str:
        zones = [s.grid_zone for s in await self._store.sites() if s.name in self._connectors]
        summary = await self._carbon.refresh(zones, now=self._clock.now())
        await self._store.save_readings(self._carbon.take_observed())
        return summary

    async def refresh_inventory(self) -> str:
        return await refresh_inventory(
            store=self._store, connectors=self._connectors, visible=self._visible
        )

    async def reclaim_idle(self) -> str:
        if self._capacity is None:
            return "bursting is off: no cloud capacity of the broker's to reclaim"
        return await self._capacity.reclaim_idle()
