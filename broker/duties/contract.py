"""What the scheduled jobs ask of the broker: one method per job.

The service implements this over its live parts (forecaster, planner, carbon sources,
connectors, store); the scheduler only decides when each method runs. Each returns a short
human summary ("retrained on 14 days, MAPE 8.2%") for the log and the ops endpoint, and
raises on failure; the job that called it logs the error and the schedule carries on.
"""

from __future__ import annotations

from typing import Protocol


class Duties(Protocol):
    async def retrain_forecast(self) -> str:
        """Refit the demand forecast on recent history."""
        ...

    async def plan_capacity(self) -> str:
        """Turn the forecast into a capacity plan (what to burst, what to hold)."""
        ...

    async def refresh_carbon(self) -> str:
        """Fetch current grid intensity and forecasts for the sites' zones."""
        ...

    async def refresh_inventory(self) -> str:
        """Re-read the sites' GPU pools, prices and health."""
        ...

    async def reclaim_idle(self) -> str:
        """Release burst capacity that has sat idle past its grace period."""
        ...
