"""A GCP site's `connector:` settings, validated field by field.

Credentials are named by reference only: a service-account key file (`credentials_file`) or
nothing, which means application-default credentials (the metadata server, a workload
identity, or `gcloud auth application-default login`). An inline key is refused with an error
that never repeats the value, because configuration errors end up in logs: pydantic's own
messages echo the input, so `parse` reports field names and reasons only.

Example (`config/*.yaml`)::

    - name: gcp-us-central1
      kind: gcp
      region: us-central1
      grid_zone: US-MIDA-PJM
      connector:
        project: my-gpu-project
        zones: [us-central1-a, us-central1-c]
        credentials_file: secrets/broker-sa.json
        machine_types: ["a2-highgpu-*", "g2-standard-8"]
        startup_script_file: scripts/join-cluster.sh
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.domain.errors import ConfigError
from connectors.settings import SiteSettings

# Keys someone might use to paste a key into the config instead of naming a file.
_INLINE_KEY_FIELDS = frozenset(
    {"private_key", "private_key_id", "credentials", "credentials_json", "key", "key_json"}
)
_INLINE_KEY_MARKERS = ("PRIVATE KEY", '"private_key"', "'private_key'")
_LABEL_VALUE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"


class GcpConnectorSettings(BaseModel):
    """The `connector:` mapping of a `kind: gcp` site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The project that owns the instances and is billed for them.
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    # Compute Engine region; default the site's `region`.
    region: Annotated[str, Field(min_length=1)] | None = None
    # Zones to try, in order, when provisioning; default every zone of the region, sorted.
    zones: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    # Path to a service-account JSON key file (relative to the config file); None means
    # application-default credentials. Never the key itself.
    credentials_file: str | None = None
    # Override of the API endpoint: a Private Service Connect endpoint in production, the
    # fake server in tests. "https://host" or "http://host:port".
    api_endpoint: str | None = None
    # Allow-list of machine types (fnmatch patterns such as "a2-highgpu-*"), matched against
    # the machine type or a pool key such as "n1-standard-8-nvidia-tesla-t4x1"; None allows all.
    machine_types: tuple[str, ...] | None = None
    # Pool size reported in the inventory for each machine type (nodes the broker may start).
    max_nodes: Annotated[int, Field(ge=1, le=10_000)] = 16
    # Boot image of provisioned instances (an image or image family URL).
    source_image: Annotated[str, Field(min_length=1)] = DEFAULT_IMAGE
    # VPC network and optional subnetwork URLs of the instances' one network interface.
    network: Annotated[str, Field(min_length=1)] = "global/networks/default"
    subnetwork: str | None = None
    # Give instances an ephemeral external IP (else they need Cloud NAT to reach the cluster).
    external_ip: bool = False
    # Script read at provision time and passed as metadata `startup-script`: it joins the node
    # to the Kubernetes cluster. None: no startup script.
    startup_script_file: str | None = None
    # Boot disk size and type (pd-balanced works on A2, A3 High/Mega, G2 and N1).
    disk_gb: Annotated[int, Field(ge=10, le=65_536)] = 200
    disk_type: Annotated[str, Field(min_length=1)] = "pd-balanced"
    # CSV of prices (see connectors/gcp/data/README.md); None: the shipped catalog.
    price_catalog: str | None = None
    # Value of the `gpu-broker-owner` label that marks this broker's instances.
    owner: Annotated[str, Field(pattern=_LABEL_VALUE)] = "gpu-broker"
    # Timeout of one API call, and of waiting for one zone operation to finish.
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    operation_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    # How long discovered machine and accelerator types are reused before listing again.
    catalog_ttl_s: Annotated[float, Field(ge=0)] = 3600.0

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        inline = sorted(_INLINE_KEY_FIELDS & set(data))
        if inline:
            raise ValueError(
                f"inline credentials ({', '.join(inline)}) are not accepted: save the "
                "service-account key as a file and set credentials_file to its path"
            )
        path = data.get("credentials_file")
        if isinstance(path, str) and (
            path.lstrip().startswith("{") or any(m in path for m in _INLINE_KEY_MARKERS)
        ):
            raise ValueError(
                "credentials_file holds key content, not a path: save the key as a file "
                "and set credentials_file to its path"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> GcpConnectorSettings:
        if self.api_endpoint is not None and not self.api_endpoint.startswith(
            ("https://", "http://")
        ):
            raise ValueError("api_endpoint must start with https:// or http://")
        if len(set(self.zones)) != len(self.zones):
            raise ValueError("zones must not repeat")
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class GcpSettings:
    """The validated settings with the region filled in and paths resolved."""

    site: str
    project: str
    region: str
    zones: tuple[str, ...]
    credentials_file: Path | None
    api_endpoint: str | None
    machine_types: tuple[str, ...] | None
    max_nodes: int
    source_image: str
    network: str
    subnetwork: str | None
    external_ip: bool
    startup_script_file: Path | None
    disk_gb: int
    disk_type: str
    price_catalog: Path | None
    owner: str
    request_timeout_s: float
    operation_timeout_s: float
    catalog_ttl_s: float


def parse(site: SiteSettings, *, config_dir: Path) -> GcpSettings:
    """Validate `site.connector`; raises ConfigError naming fields, never echoing values.
    Relative paths are taken from `config_dir`, the config file's folder."""
    try:
        raw = GcpConnectorSettings.model_validate(site.connector)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or '(connector)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigError(
            f"site {site.name}: invalid GCP connector settings:\n" + "\n".join(lines)
        ) from None
    region = raw.region or site.region
    stray = [z for z in raw.zones if not z.startswith(f"{region}-")]
    if stray:
        raise ConfigError(f"site {site.name}: zones {stray} are not in region {region}")

    def path(value: str | None) -> Path | None:
        return None if value is None else config_dir / value  # an absolute value stays

    return GcpSettings(
        site=site.name,
        project=raw.project,
        region=region,
        zones=raw.zones,
        credentials_file=path(raw.credentials_file),
        api_endpoint=raw.api_endpoint,
        machine_types=raw.machine_types,
        max_nodes=raw.max_nodes,
        source_image=raw.source_image,
        network=raw.network,
        subnetwork=raw.subnetwork,
        external_ip=raw.external_ip,
        startup_script_file=path(raw.startup_script_file),
        disk_gb=raw.disk_gb,
        disk_type=raw.disk_type,
        price_catalog=path(raw.price_catalog),
        owner=raw.owner,
        request_timeout_s=raw.request_timeout_s,
        operation_timeout_s=raw.operation_timeout_s,
        catalog_ttl_s=raw.catalog_ttl_s,
    )
