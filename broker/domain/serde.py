"""A job spec as a JSON-ready dict, in the shape of the API's job body.

The database stores specs in this shape and the API validates bodies into it, so there is
one mapping between the nested JSON and `JobSpec`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.domain.enums import JobKind, Tier
from broker.domain.jobs import JobSpec, Resources, Workload
from broker.domain.objective import Weights


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    r = spec.resources
    return {
        "name": spec.name,
        "priority": spec.tier.value,
        "kind": spec.kind.value,
        "resources": {
            "gpus": r.gpus,
            "gpu_models": list(r.gpu_models),
            "min_gpu_memory_gb": r.min_gpu_memory_gb,
            "mig_profile": r.mig_profile,
            "gpu_fraction": r.gpu_fraction,
            "nodes": r.nodes,
            "cpu": r.cpu,
            "memory_gb": r.memory_gb,
        },
        "workload": {
            "image": spec.workload.image,
            "command": list(spec.workload.command),
            "env": dict(spec.workload.env),
        },
        "estimated_duration_s": spec.estimated_duration_s,
        "deadline": spec.deadline.isoformat() if spec.deadline else None,
        "latency_slo_ms": spec.latency_slo_ms,
        "origin": spec.origin,
        "allowed_regions": list(spec.allowed_regions),
        "preemptible": spec.preemptible,
        "max_hourly_cost": spec.max_hourly_cost,
        "objective": None
        if spec.objective is None
        else {
            "cost": spec.objective.cost,
            "latency": spec.objective.latency,
            "carbon": spec.objective.carbon,
        },
        "reference_gpu_model": spec.reference_gpu_model,
    }


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    r = data["resources"]
    w = data["workload"]
    return JobSpec(
        name=data["name"],
        tier=Tier(data["priority"]),
        kind=JobKind(data["kind"]),
        resources=Resources(
            gpus=r["gpus"],
            gpu_models=tuple(r["gpu_models"]),
            min_gpu_memory_gb=r["min_gpu_memory_gb"],
            mig_profile=r["mig_profile"],
            gpu_fraction=r["gpu_fraction"],
            nodes=r["nodes"],
            cpu=r["cpu"],
            memory_gb=r["memory_gb"],
        ),
        workload=Workload(image=w["image"], command=tuple(w["command"]), env=dict(w["env"])),
        estimated_duration_s=data["estimated_duration_s"],
        deadline=_utc(data["deadline"]),
        latency_slo_ms=data["latency_slo_ms"],
        origin=data["origin"],
        allowed_regions=tuple(data["allowed_regions"]),
        preemptible=data["preemptible"],
        max_hourly_cost=data["max_hourly_cost"],
        objective=Weights(**data["objective"]) if data.get("objective") else None,
        # absent from jobs stored before run times by GPU model
        reference_gpu_model=data.get("reference_gpu_model"),
    )


def _utc(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None
