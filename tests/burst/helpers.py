"""Builders for planner inputs: offers, waiting jobs and settings with readable defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.burst.model import Offer, WaitingJob
from broker.burst.settings import BurstSettings, BurstTarget
from broker.domain.enums import Tier
from broker.domain.latency import LatencyMatrix

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LATENCY = LatencyMatrix.from_rows(
    [
        ("origin:oslo", "aws:eu-north-1", 12.0),
        ("origin:oslo", "gcp:us-central1", 110.0),
        ("origin:oslo", "aws:us-east-1", 95.0),
    ]
)


def offer(
    provider: str = "aws-east",
    model: str = "H100",
    *,
    price: float = 6.0,
    spot: bool = False,
    gpus: int = 8,
    intensity: float | None = 400.0,
    location: str = "aws:us-east-1",
    joins: str = "k8s",
    power_w: float = 700.0,
    pool: str | None = None,
) -> Offer:
    return Offer(
        provider_site=provider,
        joins_site=joins,
        pool_id=pool or f"{provider}/{model}-{gpus}x",
        gpu_model=model,
        gpus_per_instance=gpus,
        price=price,
        spot=spot,
        intensity_gco2_per_kwh=intensity,
        board_power_w=power_w,
        pue=1.0,
        location=location,
    )


def job(
    job_id: str,
    *,
    tier: Tier = Tier.P1,
    tenant: str = "vision",
    gpus: int = 8,
    nodes: int = 1,
    waited_s: float = 600.0,
    duration_s: float = 3600.0,
    models: tuple[str, ...] = ("H100",),
    origin: str | None = None,
    pools: frozenset[str] | None = None,
) -> WaitingJob:
    return WaitingJob(
        id=job_id,
        tenant=tenant,
        tier=tier,
        gpu_models=models,
        milli_per_node=gpus * 1000,
        nodes=nodes,
        waited_s=waited_s,
        estimated_duration_s=duration_s,
        origin=origin,
        pools=pools,
    )


def burst_settings(**overrides: Any) -> BurstSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "targets": [
            BurstTarget(provider="aws-east", joins="k8s"),
            BurstTarget(provider="gcp-central", joins="k8s"),
        ],
        "idle_ttl_s": 0.0,
    }
    values.update(overrides)
    return BurstSettings.model_validate(values)
