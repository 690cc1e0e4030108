"""How much cost, latency and carbon count when ranking sites: per tier, or per job."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Weights:
    cost: float
    latency: float
    carbon: float

    def normalised(self) -> Weights:
        total = self.cost + self.latency + self.carbon
        if total <= 0:
            return Weights(cost=1 / 3, latency=1 / 3, carbon=1 / 3)
        return Weights(
            cost=self.cost / total, latency=self.latency / total, carbon=self.carbon / total
        )
