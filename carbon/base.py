"""The carbon-source interface and the reading type every source returns.

A reading always says where it came from and how much to trust it (forecast, estimated,
stale), so that reports can show what the numbers rest on. Intensities are location-based
gCO2e per kWh of electricity consumed, the unit of the Green Software Foundation's SCI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from carbon.basis import Basis


@dataclass(frozen=True, slots=True, kw_only=True)
class IntensityReading:
    """Grid carbon intensity of one zone over one period starting at `at` (UTC)."""

    zone: str
    at: datetime
    gco2_per_kwh: float
    source: str
    forecast: bool = False
    estimated: bool = False
    stale: bool = False
    # operational / lifecycle / marginal; None only from sources that predate the field.
    basis: Basis | None = None


@runtime_checkable
class CarbonSource(Protocol):
    """Anything that can tell the grid intensity of a zone."""

    name: str

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        """The intensity in force at `at`, or None when the zone is unknown to this source."""
        ...

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        """Hourly readings covering [start, end); empty when the zone is unknown."""
        ...
