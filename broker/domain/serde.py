"""Job and service specs as JSON-ready dicts, in the shape of the API's bodies.

The database stores specs in this shape and the API validates bodies into it, so there is
one mapping between the nested JSON and `JobSpec` (and `ServiceSpec`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.domain.autoscale import LoadMetric
from broker.domain.enums import JobKind, Tier
from broker.domain.jobs import Endpoint, JobSpec, Resources, Workload
from broker.domain.objective import Weights
from broker.domain.services import Origin, ServiceSpec, SpotPolicy


def _resources_to_dict(r: Resources) -> dict[str, Any]:
    return {
        "gpus": r.gpus,
        "gpu_models": list(r.gpu_models),
        "min_gpu_memory_gb": r.min_gpu_memory_gb,
        "mig_profile": r.mig_profile,
        "gpu_fraction": r.gpu_fraction,
        "nodes": r.nodes,
        "cpu": r.cpu,
        "memory_gb": r.memory_gb,
    }


def _resources_from_dict(r: dict[str, Any]) -> Resources:
    return Resources(
        gpus=r["gpus"],
        gpu_models=tuple(r["gpu_models"]),
        min_gpu_memory_gb=r["min_gpu_memory_gb"],
        mig_profile=r["mig_profile"],
        gpu_fraction=r["gpu_fraction"],
        nodes=r["nodes"],
        cpu=r["cpu"],
        memory_gb=r["memory_gb"],
    )


def _workload_to_dict(w: Workload) -> dict[str, Any]:
    return {"image": w.image, "command": list(w.command), "env": dict(w.env)}


def _workload_from_dict(w: dict[str, Any]) -> Workload:
    return Workload(image=w["image"], command=tuple(w["command"]), env=dict(w["env"]))


def _weights(w: Weights | None) -> dict[str, float] | None:
    return None if w is None else {"cost": w.cost, "latency": w.latency, "carbon": w.carbon}


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "priority": spec.tier.value,
        "kind": spec.kind.value,
        "resources": _resources_to_dict(spec.resources),
        "workload": _workload_to_dict(spec.workload),
        "estimated_duration_s": spec.estimated_duration_s,
        "deadline": spec.deadline.isoformat() if spec.deadline else None,
        "latency_slo_ms": spec.latency_slo_ms,
        "origin": spec.origin,
        "allowed_regions": list(spec.allowed_regions),
        "preemptible": spec.preemptible,
        "max_hourly_cost": spec.max_hourly_cost,
        "objective": _weights(spec.objective),
        "reference_gpu_model": spec.reference_gpu_model,
        "service_id": spec.service_id,
        "generation": spec.generation,
        "endpoint": (
            {"port": spec.endpoint.port, "readiness_path": spec.endpoint.readiness_path}
            if spec.endpoint
            else None
        ),
        "node_pool": spec.node_pool,
    }


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    w = data["workload"]
    return JobSpec(
        name=data["name"],
        tier=Tier(data["priority"]),
        kind=JobKind(data["kind"]),
        resources=_resources_from_dict(data["resources"]),
        workload=_workload_from_dict(w),
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
        # absent from jobs stored before services
        service_id=data.get("service_id"),
        generation=data.get("generation", 0),
        endpoint=Endpoint(**data["endpoint"]) if data.get("endpoint") else None,
        node_pool=data.get("node_pool"),  # absent from jobs stored before node pools
    )


def _utc(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None


def service_spec_to_dict(spec: ServiceSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "priority": spec.tier.value,
        "resources": _resources_to_dict(spec.resources),
        "workload": {
            **_workload_to_dict(spec.workload),
            "port": spec.port,
            "readiness_path": spec.readiness_path,
        },
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "autoscaling": {
            "metric": spec.metric.value,
            "target": spec.target,
            "stable_window_s": spec.stable_window_s,
            "scale_down_delay_s": spec.scale_down_delay_s,
            "scale_to_zero_after_s": spec.scale_to_zero_after_s,
            "load_query": spec.load_query,
        },
        "latency_slo_ms": spec.latency_slo_ms,
        "origins": [{"location": o.location, "share": o.share} for o in spec.origins],
        "allowed_regions": list(spec.allowed_regions),
        "max_hourly_cost": spec.max_hourly_cost,
        "objective": _weights(spec.objective),
        "spot": spec.spot.value,
        "critical_share": spec.critical_share,
    }


def service_spec_from_dict(data: dict[str, Any]) -> ServiceSpec:
    w = data["workload"]
    return ServiceSpec(
        name=data["name"],
        tier=Tier(data["priority"]),
        resources=_resources_from_dict(data["resources"]),
        workload=_workload_from_dict(w),
        port=w["port"],
        readiness_path=w["readiness_path"],
        min_replicas=data["min_replicas"],
        max_replicas=data["max_replicas"],
        metric=LoadMetric(data["autoscaling"]["metric"]),
        target=data["autoscaling"]["target"],
        stable_window_s=data["autoscaling"]["stable_window_s"],
        scale_down_delay_s=data["autoscaling"]["scale_down_delay_s"],
        scale_to_zero_after_s=data["autoscaling"]["scale_to_zero_after_s"],
        load_query=data["autoscaling"].get("load_query"),
        latency_slo_ms=data["latency_slo_ms"],
        origins=tuple(Origin(location=o["location"], share=o["share"]) for o in data["origins"]),
        allowed_regions=tuple(data["allowed_regions"]),
        max_hourly_cost=data["max_hourly_cost"],
        objective=Weights(**data["objective"]) if data.get("objective") else None,
        spot=SpotPolicy(data["spot"]),
        critical_share=data["critical_share"],
    )
