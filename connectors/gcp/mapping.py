"""Broker shapes to Compute Engine resources and back.

Instances follow the `instances` resource of compute/v1
(https://cloud.google.com/compute/docs/reference/rest/v1/instances). A broker instance is
found again by its labels, never by a local record: `gpu-broker-owner` and `gpu-broker-site`
mark ownership, `gpu-broker-request` ties it to the provision request, and
`gpu-broker-pool`/`-accelerator`/`-gpus` describe it, so `instances()` after a restart needs
no catalog lookup. Label values allow only `[a-z0-9_-]` up to 63 characters
(https://cloud.google.com/compute/docs/labeling-resources), hence `label_value`.

Names are deterministic in the request id and index, so a retried provision finds the
instance it started: `gb-<request slug>-<hash>-<index>`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from connectors.base import CloudInstance, InstanceState
from connectors.gcp.catalog import ACCELERATOR_MODELS, Offering

if TYPE_CHECKING:
    from google.cloud import compute_v1

OWNER_LABEL = "gpu-broker-owner"
SITE_LABEL = "gpu-broker-site"
REQUEST_LABEL = "gpu-broker-request"
POOL_LABEL = "gpu-broker-pool"
ACCELERATOR_LABEL = "gpu-broker-accelerator"
GPUS_LABEL = "gpu-broker-gpus"

INSTANCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

# Instance.status -> InstanceState
# (https://cloud.google.com/compute/docs/instances/instance-life-cycle).
INSTANCE_STATES: Mapping[str, InstanceState] = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "REPAIRING": InstanceState.PENDING,  # host failure: comes back on its own
    "RUNNING": InstanceState.RUNNING,
    "PENDING_STOP": InstanceState.STOPPING,
    "STOPPING": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "SUSPENDED": InstanceState.TERMINATED,  # holds no running capacity
    "TERMINATED": InstanceState.TERMINATED,  # GCE's word for stopped
}


def label_value(text: str) -> str:
    """`text` as a valid label value: lowercase, `[a-z0-9_-]`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


@dataclass(frozen=True, slots=True)
class RequestNames:
    """The label and instance names that one provision request uses."""

    request_id: str

    @property
    def stem(self) -> str:
        slug = re.sub(r"-+", "-", label_value(self.request_id)).strip("-_")[:36].strip("-_")
        digest = hashlib.sha256(self.request_id.encode()).hexdigest()[:8]
        return f"{slug}-{digest}" if slug else digest

    @property
    def label(self) -> str:
        return self.stem

    def instance(self, index: int) -> str:
        return f"gb-{self.stem}-{index}"


def label_filter(labels: Mapping[str, str]) -> str:
    """An aggregatedList filter matching every label; label values never contain quotes."""
    return " AND ".join(f'(labels.{k} = "{v}")' for k, v in sorted(labels.items()))


def name_filter(name: str) -> str:
    return f'(name = "{name}")'


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """Everything an insert needs besides the zone-independent settings."""

    name: str
    zone: str
    offer: Offering
    spot: bool
    labels: Mapping[str, str]
    startup_script: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Shape:
    """Zone-independent instance settings (from the site's connector settings)."""

    source_image: str
    network: str
    subnetwork: str | None
    external_ip: bool
    disk_gb: int
    disk_type: str


def instance_body(spec: InstanceSpec, shape: Shape) -> compute_v1.Instance:
    """The Instance resource to insert.

    GPU VMs cannot live-migrate, so `onHostMaintenance` is TERMINATE; spot VMs use the SPOT
    provisioning model and are deleted, not stopped, when preempted, so a preempted node
    leaves nothing to pay for (https://cloud.google.com/compute/docs/instances/spot).
    """
    from google.cloud import compute_v1

    zone = spec.zone
    scheduling = compute_v1.Scheduling(
        on_host_maintenance="TERMINATE",
        automatic_restart=not spec.spot,
    )
    if spec.spot:
        scheduling.provisioning_model = "SPOT"
        scheduling.instance_termination_action = "DELETE"
    nic = compute_v1.NetworkInterface(network=shape.network)
    if shape.subnetwork:
        nic.subnetwork = shape.subnetwork
    if shape.external_ip:
        nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    body = compute_v1.Instance(
        name=spec.name,
        machine_type=f"zones/{zone}/machineTypes/{spec.offer.machine_type}",
        labels=dict(spec.labels),
        scheduling=scheduling,
        network_interfaces=[nic],
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=shape.source_image,
                    disk_size_gb=shape.disk_gb,
                    disk_type=f"zones/{zone}/diskTypes/{shape.disk_type}",
                ),
            )
        ],
    )
    if spec.offer.attached:
        body.guest_accelerators = [
            compute_v1.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{spec.offer.accelerator_type}",
                accelerator_count=spec.offer.gpus,
            )
        ]
    if spec.startup_script is not None:
        body.metadata = compute_v1.Metadata(
            items=[compute_v1.Items(key="startup-script", value=spec.startup_script)]
        )
    return body


def last_segment(url: str) -> str:
    """`zones/us-central1-a/machineTypes/a2-highgpu-1g` (or a full URL) -> `a2-highgpu-1g`."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def instance_state(status: str) -> InstanceState:
    """Unknown statuses count as pending: present, but not known to run work."""
    return INSTANCE_STATES.get(status, InstanceState.PENDING)


def cloud_instance(inst: compute_v1.Instance, *, site: str) -> CloudInstance:
    """A broker-owned instance as the domain sees it."""
    labels = dict(inst.labels)
    accel = labels.get(ACCELERATOR_LABEL, "")
    gpus = labels.get(GPUS_LABEL, "")
    if inst.guest_accelerators and not accel:
        accel = last_segment(inst.guest_accelerators[0].accelerator_type)
        gpus = str(inst.guest_accelerators[0].accelerator_count)
    machine_type = last_segment(inst.machine_type)
    pool_key = labels.get(POOL_LABEL) or machine_type
    spot = inst.scheduling.provisioning_model == "SPOT" or inst.scheduling.preemptible
    launched = inst.creation_timestamp
    return CloudInstance(
        id=inst.name,
        pool_id=f"{site}/{pool_key}",
        gpu_model=ACCELERATOR_MODELS.get(accel, ""),
        gpus=int(gpus) if gpus.isdigit() else 0,
        zone=last_segment(inst.zone),
        spot=bool(spot),
        state=instance_state(inst.status),
        launched_at=datetime.fromisoformat(launched).astimezone(UTC) if launched else None,
        extra={
            "machine_type": machine_type,
            "accelerator_type": accel,
            "status": inst.status,
            "request": labels.get(REQUEST_LABEL, ""),
            "provider_id": provider_id(inst.zone, inst.name),
        },
    )


def provider_id(zone_url: str, name: str) -> str:
    """The `spec.providerID` the GCE cloud provider gives the VM's Kubernetes node,
    `gce://<project>/<zone>/<name>`, from the instance's zone URL
    (`.../projects/<project>/zones/<zone>`); empty when the URL names no project."""
    parts = zone_url.rstrip("/").split("/")
    if "projects" not in parts or parts.index("projects") + 1 >= len(parts):
        return ""
    project = parts[parts.index("projects") + 1]
    return f"gce://{project}/{last_segment(zone_url)}/{name}"
