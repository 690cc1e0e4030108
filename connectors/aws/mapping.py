"""EC2 shapes into the broker's vocabulary, through tables (libcloud's `NODE_STATE_MAP`).

* GPU names: `DescribeInstanceTypes` reports `GpuInfo.Gpus[].Name` ("A100", "V100", "L40S")
  and `MemoryInfo.SizeInMiB` per GPU; the A100 and V100 come in two memory sizes under one
  name, so the table keys on the name and picks the variant by memory. Types whose GPU is not
  in the table (AMD Radeon, T4g on Graviton) or that carry a fraction of a GPU (g6f) are not
  offered: the broker has no power figure or whole-GPU ledger for them.
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GpuDeviceInfo.html
* Instance states: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceState.html
* Raw JSON stays here: callers get `GpuType` and `CloudInstance`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from connectors.base import CloudInstance, InstanceState

log = logging.getLogger(__name__)

# Ownership tags every broker-launched instance carries.
TAG_OWNER = "gpu-broker:owner"
TAG_SITE = "gpu-broker:site"
TAG_REQUEST = "gpu-broker:request"
TAG_POOL = "gpu-broker:pool"
TAG_MODEL = "gpu-broker:gpu-model"
TAG_GPUS = "gpu-broker:gpus"

# AWS GPU name -> (minimum MiB per GPU, canonical model), largest first. Canonical names are
# those of carbon.power.GPU_MODELS; memory thresholds sit between the two sizes AWS sells.
GPU_NAMES: Mapping[str, tuple[tuple[int, str], ...]] = MappingProxyType(
    {
        "A100": ((61_440, "A100-80GB"), (0, "A100")),  # p4de 81920 MiB, p4d 40960 MiB
        "V100": ((24_576, "V100-32GB"), (0, "V100")),  # p3dn 32768 MiB, p3 16384 MiB
        "H100": ((0, "H100"),),
        "H200": ((0, "H200"),),
        "B200": ((0, "B200"),),
        "L4": ((0, "L4"),),
        "L40S": ((0, "L40S"),),
        "A10G": ((0, "A10G"),),
        "T4": ((0, "T4"),),
    }
)

# EC2 instance-state-name -> the broker's instance life.
STATES: Mapping[str, InstanceState] = MappingProxyType(
    {
        "pending": InstanceState.PENDING,
        "running": InstanceState.RUNNING,
        "stopping": InstanceState.STOPPING,
        "stopped": InstanceState.STOPPING,  # holds no capacity, not gone either
        "shutting-down": InstanceState.STOPPING,
        "terminated": InstanceState.TERMINATED,
    }
)
ALIVE_STATES = ("pending", "running", "stopping", "shutting-down")
MIB_PER_GB = 1024.0


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuType:
    """One EC2 instance type with whole GPUs of a model the broker knows."""

    instance_type: str
    gpu_model: str
    gpus: int
    gpu_memory_gb: float  # per GPU, as AWS reports it (usable memory, a little under nominal)
    vcpus: int
    memory_gb: float


def canonical_model(name: str, memory_mib: int) -> str | None:
    """The broker's name for an AWS GPU name and per-GPU memory; None when not in the table."""
    for min_mib, model in GPU_NAMES.get(name, ()):
        if memory_mib >= min_mib:
            return model
    return None


def gpu_type(raw: Mapping[str, Any]) -> GpuType | None:
    """A `DescribeInstanceTypes` entry as a `GpuType`, or None when it offers no usable GPU."""
    gpus = raw.get("GpuInfo", {}).get("Gpus", [])
    if len(gpus) != 1:  # no GPU, or a mixed box the broker cannot schedule as one pool
        return None
    gpu = gpus[0]
    count = int(gpu.get("Count", 0))
    if count < 1 or float(gpu.get("GpuPartitionSize", 1.0)) < 1.0:
        return None
    memory_mib = int(gpu.get("MemoryInfo", {}).get("SizeInMiB", 0))
    model = canonical_model(str(gpu.get("Name", "")), memory_mib)
    if model is None:
        _warn_unmapped(str(gpu.get("Name", "")), memory_mib, str(raw.get("InstanceType", "")))
        return None
    return GpuType(
        instance_type=str(raw["InstanceType"]),
        gpu_model=model,
        gpus=count,
        gpu_memory_gb=round(memory_mib / MIB_PER_GB, 1),
        vcpus=int(raw.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gb=round(int(raw.get("MemoryInfo", {}).get("SizeInMiB", 0)) / MIB_PER_GB, 1),
    )


# Once per GPU and process: the catalog is listed again on every refresh.
@functools.cache
def _warn_unmapped(name: str, memory_mib: int, instance_type: str) -> None:
    """An instance type left out because its GPU has no canonical model (and so no power
    figure): say so, instead of a region that silently offers less."""
    log.warning(
        "EC2 instance type %s carries GPU %r (%d MiB), which maps to no known GPU model; it "
        "is not offered. Add it to connectors/aws/mapping.py, and if the model is new give "
        "its figures in the settings' `gpu_models`",
        instance_type,
        name,
        memory_mib,
    )


def tags_of(raw: Mapping[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in raw.get("Tags", [])}


def is_spot(raw: Mapping[str, Any]) -> bool:
    return raw.get("InstanceLifecycle") == "spot"


def cloud_instance(
    raw: Mapping[str, Any], *, site: str, types: Mapping[str, GpuType]
) -> CloudInstance:
    """A `DescribeInstances` instance as a `CloudInstance`; the type table gives model and GPUs,
    the launch tags stand in for types no longer in the table (an allow-list changed)."""
    tags = tags_of(raw)
    instance_type = str(raw.get("InstanceType", ""))
    known = types.get(instance_type)
    model = known.gpu_model if known else tags.get(TAG_MODEL, "unknown")
    gpus = known.gpus if known else _int(tags.get(TAG_GPUS, "0"))
    launched = raw.get("LaunchTime")
    zone = str(raw.get("Placement", {}).get("AvailabilityZone", ""))
    return CloudInstance(
        id=str(raw["InstanceId"]),
        pool_id=tags.get(TAG_POOL, f"{site}/{instance_type}"),
        gpu_model=model,
        gpus=gpus,
        zone=zone,
        spot=is_spot(raw),
        state=STATES.get(str(raw.get("State", {}).get("Name", "")), InstanceState.PENDING),
        launched_at=launched.astimezone(UTC) if isinstance(launched, datetime) else None,
        extra={
            "instance_type": instance_type,
            "request": tags.get(TAG_REQUEST, ""),
            "state": str(raw.get("State", {}).get("Name", "")),
            "provider_id": provider_id(zone, str(raw["InstanceId"])),
        },
    )


def provider_id(zone: str, instance_id: str) -> str:
    """The `spec.providerID` the AWS cloud provider gives the instance's Kubernetes node.
    https://github.com/kubernetes/cloud-provider-aws (`aws:///<zone>/<instance id>`)"""
    return f"aws:///{zone}/{instance_id}"


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0
