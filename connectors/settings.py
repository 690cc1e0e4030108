"""The fleet's settings: each site, its GPU pools, and the simulator's pace.

They live with the connectors, not in `broker.config`, because a connector is built from its
own site's settings and nothing else of the broker's tree; `broker.config` nests them in the
one settings tree, so the dependency points from the broker to the connectors. Every field is
documented here; `config/example.yaml` shows them in use.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from broker.domain.enums import SiteKind
from broker.domain.fleet import GpuPool, Site

__all__ = [
    "PoolSettings",
    "SimSettings",
    "SiteSettings",
    "pools_from_settings",
    "site_from_settings",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimSettings(_Strict):
    """The demo fleet's simulator: jobs run `estimated_duration_s / speed` wall seconds."""

    speed: Annotated[float, Field(gt=0)] = 60.0
    start_delay_s: Annotated[float, Field(ge=0)] = 1.0  # image pull + container start


class PoolSettings(_Strict):
    gpu_model: Annotated[str, Field(min_length=1)]
    gpu_memory_gb: Annotated[float, Field(gt=0)]
    gpus_per_node: Annotated[int, Field(gt=0)]
    nodes: Annotated[int, Field(gt=0)]
    price_on_demand: Annotated[float, Field(ge=0)]
    price_spot: Annotated[float, Field(ge=0)] | None = None
    mig_profiles: tuple[str, ...] = ()
    cpu_per_node: Annotated[float, Field(gt=0)] = 96.0
    memory_gb_per_node: Annotated[float, Field(gt=0)] = 1024.0


class SiteSettings(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
    kind: SiteKind
    region: Annotated[str, Field(min_length=1)]
    location: str | None = None  # latency-matrix key; default "<kind>:<region>"
    grid_zone: Annotated[str, Field(min_length=1)]
    private: bool = False
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    pools: tuple[PoolSettings, ...] = ()
    # Connector-specific settings (kubeconfig path, AWS profile...), by reference only.
    connector: dict[str, Any] = Field(default_factory=dict)

    @property
    def latency_key(self) -> str:
        return self.location or f"{self.kind.value}:{self.region}"


def site_from_settings(site: SiteSettings) -> Site:
    """The domain site a configured site describes (for the simulator and the connectors)."""
    return Site(
        name=site.name,
        kind=site.kind,
        region=site.region,
        location=site.latency_key,
        grid_zone=site.grid_zone,
        private=site.private,
        pue=site.pue,
    )


def pools_from_settings(site: SiteSettings) -> tuple[GpuPool, ...]:
    """Configured pools, with stable ids `<site>/<model>-<index>`."""
    return tuple(
        GpuPool(
            id=f"{site.name}/{p.gpu_model}-{i}",
            site=site.name,
            gpu_model=p.gpu_model,
            gpu_memory_gb=p.gpu_memory_gb,
            gpus_per_node=p.gpus_per_node,
            nodes=p.nodes,
            price_on_demand=p.price_on_demand,
            price_spot=p.price_spot,
            mig_profiles=p.mig_profiles,
            cpu_per_node=p.cpu_per_node,
            memory_gb_per_node=p.memory_gb_per_node,
        )
        for i, p in enumerate(site.pools)
    )
