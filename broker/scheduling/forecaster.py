"""The demand forecaster in the running broker: fed from the job table, fitted off the loop.

`retrain` (a scheduled job, daily by default) reads the jobs of the training window, builds
the hourly table and fits the quantile models on a worker thread; `outlook` forecasts the
next hours from a fresh table (so it sees the jobs submitted since the last fit) and sets
them against the private GPUs per model. Until a first fit, `outlook` fits on demand; with
under two weeks of history the forecaster is seasonal-naive and says so (`method`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.db.demand_store import DemandRow
from broker.db.repository import Store
from broker.demand import (
    ANY_MODEL,
    DemandForecast,
    DemandForecaster,
    DemandRecord,
    DemandTable,
    ForecastConfig,
    ForecastMethod,
    Grouping,
    Shortfall,
    build_table,
    floor_hour,
    shortfalls,
)
from broker.domain.clock import Clock

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
WEEK_H = 168


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityOutlook:
    """Forecast demand against private capacity for the next `hours` hours."""

    origin: datetime
    hours: int
    quantile: float
    method: ForecastMethod
    fitted_at: datetime | None
    private_gpus: dict[str, float]  # per GPU model, healthy private sites only
    forecasts: tuple[DemandForecast, ...]
    shortfalls: tuple[Shortfall, ...]

    def peak_shortfall(self) -> dict[str, float]:
        """Per GPU model: the largest hourly shortfall over the horizon."""
        peak: dict[str, float] = {}
        for s in self.shortfalls:
            peak[s.gpu_model] = max(peak.get(s.gpu_model, 0.0), s.shortfall)
        return peak


def to_record(row: DemandRow) -> DemandRecord:
    """A job as the forecaster sees it: where it ran, else its first choice, else any model."""
    model = row.gpu_model or (row.allowed_models[0] if row.allowed_models else ANY_MODEL)
    return DemandRecord(
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        estimated_duration_s=max(1.0, row.estimated_duration_s),
        gpus=row.gpus,
        gpu_model=model,
        tier=row.tier,
    )


class DemandService:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        quantile: float = 0.9,
        config: ForecastConfig | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._quantile = quantile
        self._config = config or ForecastConfig()
        self._forecaster: DemandForecaster | None = None
        self._lock = asyncio.Lock()

    @property
    def quantile(self) -> float:
        return self._quantile

    async def _table(self, end: datetime) -> DemandTable:
        hours = self._config.train_window_hours + WEEK_H
        start = end - hours * HOUR
        rows = await self._store.demand_rows(since=start)
        records = [to_record(r) for r in rows]
        return build_table(records, start=start, end=end, grouping=Grouping.MODEL_TIER)

    async def retrain(self) -> str:
        """Fit on the jobs known now; returns a one-line summary for the scheduler's log."""
        async with self._lock:
            end = floor_hour(self._clock.now())
            table = await self._table(end)
            forecaster = DemandForecaster(self._config)
            await asyncio.to_thread(forecaster.fit, table, now=end)
            self._forecaster = forecaster
        return (
            f"demand forecaster fitted at {end.isoformat()}: {forecaster.method}, "
            f"{len(table.keys)} series, {forecaster.training_rows} training rows"
        )

    async def outlook(self, *, hours: int) -> CapacityOutlook:
        """Demand at the configured quantile against private GPUs, hour by hour."""
        if not 1 <= hours <= self._config.horizon_hours:
            raise ValueError(f"hours must be in [1, {self._config.horizon_hours}]")
        if self._forecaster is None:
            await self.retrain()
        forecaster = self._forecaster
        assert forecaster is not None  # set by retrain
        origin = floor_hour(self._clock.now())
        table = await self._table(origin)
        forecasts = await asyncio.to_thread(forecaster.predict, origin, hours, history=table)
        capacity = await self.private_gpus()
        method = forecaster.method or ForecastMethod.SEASONAL_NAIVE
        return CapacityOutlook(
            origin=origin,
            hours=hours,
            quantile=self._quantile,
            method=method,
            fitted_at=forecaster.fitted_at,
            private_gpus=capacity,
            forecasts=tuple(forecasts),
            shortfalls=tuple(shortfalls(forecasts, capacity, quantile=self._quantile)),
        )

    async def private_gpus(self) -> dict[str, float]:
        """Whole GPUs per model on reachable private sites (MIG and shared pools included).

        A degraded site's pools already leave out its cordoned or NotReady nodes."""
        sites = await self._store.sites()
        private = {s.name for s in sites if s.private and s.health.takes_work}
        out: dict[str, float] = {}
        for p in await self._store.pools():
            if p.site in private:
                out[p.gpu_model] = out.get(p.gpu_model, 0.0) + p.gpus_per_node * p.nodes
        return out
