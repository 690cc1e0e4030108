"""Label, annotation, resource and taint names the connector reads and writes, in one place.

NVIDIA names come from the GPU operator: the device plugin's extended resources
(`nvidia.com/gpu`, `nvidia.com/mig-<profile>` with the MIG "mixed" strategy,
`nvidia.com/gpu.shared` with time-slicing and `renameByDefault: true`) and GPU Feature
Discovery's node labels. Label values written by the broker are sanitised here so any job id
or tenant fits the 63-character label-value syntax.
"""

from __future__ import annotations

import hashlib
import re

# Extended resources (https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/).
GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
# GPU Feature Discovery node labels.
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB
COUNT_LABEL = "nvidia.com/gpu.count"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"  # time-slicing replicas per GPU
# The taint GPU node pools commonly carry; the broker's pods tolerate it.
GPU_TAINT = "nvidia.com/gpu"

# What the broker puts on its Jobs (and their pods, through the template).
JOB_ID_LABEL = "gpu-broker/job-id"
TENANT_LABEL = "gpu-broker/tenant"
TIER_LABEL = "gpu-broker/tier"
OWNER_LABEL = "gpu-broker/owner"
JOB_ID_ANNOTATION = "gpu-broker/job-id"  # the exact id; the label may be shortened
POOL_ANNOTATION = "gpu-broker/pool"
RUN_ANNOTATION = "gpu-broker/run"  # the placement's run, named in status updates
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_MAX_NAME = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def job_name(job_id: str) -> str:
    """The Job's name for a broker job id: `gb-<id>` as a DNS-1123 label of at most 63.

    An id that had to be changed (upper case, other characters) or shortened gets a digest
    of the original appended, so two ids never share a name.
    """
    slug = _NOT_DNS.sub("-", job_id.lower()).strip("-")
    name = f"gb-{slug}"
    if slug == job_id and len(name) <= _MAX_NAME:
        return name
    head = name[: _MAX_NAME - 9].rstrip("-")
    return f"{head}-{_digest(job_id)}"


def label_value(value: str) -> str:
    """`value` as a valid label value (63 characters of [A-Za-z0-9_.-], alphanumeric ends)."""
    if _LABEL_VALUE.match(value):
        return value
    slug = _NOT_LABEL.sub("-", value).strip("-_.")
    head = slug[: _MAX_NAME - 9].strip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def selector(labels: dict[str, str]) -> str:
    """An equality label selector: "a=1,b=2"."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
