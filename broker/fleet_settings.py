"""Domain sites and pools from their configuration (for the simulator and the sim connector)."""

from __future__ import annotations

from broker.config import SiteSettings
from broker.domain.fleet import GpuPool, Site


def site_from_settings(site: SiteSettings) -> Site:
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
