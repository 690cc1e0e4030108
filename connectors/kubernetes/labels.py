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
# What a service replica's Deployment (and its pods) carries besides the job's labels; the
# core/v1 Service of a broker service on the site selects its pods by the service label.
SERVICE_LABEL = "gpu-broker/service"
REPLICA_LABEL = "gpu-broker/replica"  # the replica's job id: its Deployment's selector
GENERATION_LABEL = "gpu-broker/generation"  # the service spec generation it runs
SERVICE_ANNOTATION = "gpu-broker/service-id"  # the exact id; the label may be shortened
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

_MAX_NAME = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


# Name prefixes: a Job is `gb-…`, a replica's Deployment `gbr-…` (so an external id says
# which kind it names), the Service of a broker service `gbs-…`.
_JOB_PREFIX = "gb"
_REPLICA_PREFIX = "gbr"
_SERVICE_PREFIX = "gbs"


def _dns_name(prefix: str, value: str) -> str:
    """`<prefix>-<value>` as a DNS-1123 (and, the prefix being a letter, DNS-1035) label of
    at most 63: a value that had to be changed (upper case, other characters) or shortened
    gets a digest of the original appended, so two values never share a name."""
    slug = _NOT_DNS.sub("-", value.lower()).strip("-")
    name = f"{prefix}-{slug}"
    if slug == value and len(name) <= _MAX_NAME:
        return name
    head = name[: _MAX_NAME - 9].rstrip("-")
    return f"{head}-{_digest(value)}"


def job_name(job_id: str) -> str:
    """The Job's name for a broker job id: `gb-<id>`."""
    return _dns_name(_JOB_PREFIX, job_id)


def replica_name(job_id: str) -> str:
    """The Deployment's name for a service replica's job id: `gbr-<id>`."""
    return _dns_name(_REPLICA_PREFIX, job_id)


def is_replica_name(name: str) -> bool:
    """Whether an external id names a replica's Deployment (a Job's is `gb-…`)."""
    return name.startswith(f"{_REPLICA_PREFIX}-")


def service_name(service_id: str) -> str:
    """The core/v1 Service's name for a broker service id: `gbs-<id>` (a DNS-1035 label)."""
    return _dns_name(_SERVICE_PREFIX, service_id)


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
