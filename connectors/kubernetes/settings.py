"""A Kubernetes site's `connector:` settings, validated field by field.

Credentials are named by reference only: a kubeconfig file (and optionally one of its
contexts), or `in_cluster: true` for the service account of the pod the broker runs in. A
pasted token, password or key is refused with an error that names the field and never
repeats the value, because configuration errors end up in logs (pydantic's own messages echo
the input, so `parse` reports field names and reasons only).

Example (`config/*.yaml`)::

    - name: oslo-private
      kind: kubernetes
      region: oslo
      grid_zone: "NO"
      private: true
      connector:
        kubeconfig: secrets/oslo.kubeconfig
        context: broker@oslo
        namespace: gpu-broker
        priority_classes: {P1: gpu-realtime, P2: gpu-batch, P3: gpu-scavenger}
        kueue_queue: broker
        price_per_gpu_hour: {H100: 2.10, A100-80GB: 1.40}
        node_pools:                     # tainted GPU pools (`node_pools`)
          - name: infer
            selector: {pool: infer}
            taints: [{key: gpu, value: infer, effect: NoSchedule}]
            tiers: [P1]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from broker.domain.enums import Tier
from broker.domain.errors import ConfigError
from connectors.kubernetes.node_pools import NodePool, NodePoolSettings, unique_names
from connectors.settings import SiteSettings

# A Kubernetes label value (the owner label) and a DNS-1123 label (namespace, queue names).
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# PriorityClass names are DNS-1123 subdomains.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

# Field names someone might use to paste a credential instead of naming a kubeconfig.
_SECRET_FIELD = re.compile(
    r"token|passw|secret|credential|bearer|api[_-]?key|private[_-]?key|client[_-]?key|"
    r"key[_-]?data|cert(ificate)?[_-]?data|^key$|^cert$",
    re.IGNORECASE,
)
# A kubeconfig value that is the file's content rather than its path.
_INLINE_KUBECONFIG = ("\n", "apiVersion:", "clusters:", "users:", "{")


class KubernetesConnectorSettings(BaseModel):
    """The `connector:` mapping of a `kind: kubernetes` site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Path to a kubeconfig file (relative to the config file). Exactly one of `kubeconfig`
    # and `in_cluster` must be given.
    kubeconfig: Annotated[str, Field(min_length=1)] | None = None
    # The kubeconfig context to use; None: the file's current-context.
    context: Annotated[str, Field(min_length=1)] | None = None
    # Use the service account of the pod the broker runs in.
    in_cluster: bool = False
    # Namespace the broker's Jobs are created in (it must exist).
    namespace: Annotated[str, Field(pattern=DNS_LABEL)] = "gpu-broker"
    # PriorityClass per tier; tiers left out get the cluster's default priority.
    priority_classes: dict[Tier, Annotated[str, Field(pattern=DNS_SUBDOMAIN)]] = Field(
        default_factory=dict
    )
    # Kueue LocalQueue of the namespace; set, Jobs carry `kueue.x-k8s.io/queue-name` and are
    # created suspended for Kueue to admit, which also makes gang (multi-node) jobs possible.
    kueue_queue: Annotated[str, Field(pattern=DNS_SUBDOMAIN)] | None = None
    # Amortised USD per GPU-hour by canonical GPU model ("H100", "A100-80GB"); default 0.0.
    price_per_gpu_hour: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    # Value of the `gpu-broker/owner` label marking this broker installation's Jobs.
    owner: Annotated[str, Field(pattern=LABEL_VALUE)] = "gpu-broker"
    # Seconds a finished Job (and its pods, with their logs) stays before the TTL controller
    # deletes it; None keeps finished Jobs until someone deletes them. The broker reads the
    # outcome from the watch at once, so this only needs to outlast a broker outage.
    finished_ttl_s: Annotated[int, Field(ge=0)] | None = 7 * 24 * 3600
    # Server-side timeout of one watch request: the watch thread re-checks its stop flag
    # at least this often, and a silently dead connection is noticed within it.
    watch_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 300
    # Client-side timeout of every other API call.
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Node pools (`connectors.kubernetes.node_pools`): nodes by label selector, with the
    # taints they carry and the tiers/kinds of job they take; names unique.
    node_pools: Annotated[list[NodePoolSettings], AfterValidator(unique_names)] = Field(
        default_factory=list
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        inline = sorted(str(k) for k in data if _SECRET_FIELD.search(str(k)))
        if inline:
            raise ValueError(
                f"inline credentials ({', '.join(inline)}) are not accepted: name them by "
                "reference, with a kubeconfig file (kubeconfig: path) or in_cluster: true"
            )
        path = data.get("kubeconfig")
        if isinstance(path, str) and any(marker in path for marker in _INLINE_KUBECONFIG):
            raise ValueError(
                "kubeconfig holds the file's content, not its path: save it as a file and "
                "set kubeconfig to the path"
            )
        return data

    @model_validator(mode="after")
    def _one_source(self) -> KubernetesConnectorSettings:
        if self.in_cluster == (self.kubeconfig is not None):
            raise ValueError("set exactly one of kubeconfig (a path) and in_cluster: true")
        if self.in_cluster and self.context is not None:
            raise ValueError("context applies to a kubeconfig, not to in_cluster")
        return self


@dataclass(frozen=True, slots=True, kw_only=True)
class KubernetesSettings:
    """The validated settings with the kubeconfig path resolved."""

    kubeconfig: Path | None
    context: str | None
    in_cluster: bool
    namespace: str = "gpu-broker"
    priority_classes: dict[Tier, str] = field(default_factory=dict)
    kueue_queue: str | None = None
    price_per_gpu_hour: dict[str, float] = field(default_factory=dict)
    owner: str = "gpu-broker"
    finished_ttl_s: int | None = 7 * 24 * 3600
    watch_timeout_s: int = 300
    request_timeout_s: float = 30.0
    node_pools: tuple[NodePool, ...] = ()

    def node_pool(self, name: str) -> NodePool | None:
        return next((p for p in self.node_pools if p.name == name), None)


def parse(site: SiteSettings, *, config_dir: Path) -> KubernetesSettings:
    """Validate `site.connector`; raises ConfigError naming fields, never echoing values.
    A relative kubeconfig path is taken from `config_dir`, the config file's folder."""
    try:
        raw = KubernetesConnectorSettings.model_validate(site.connector)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or '(connector)'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise ConfigError(
            f"site {site.name}: invalid Kubernetes connector settings:\n" + "\n".join(lines)
        ) from None
    return KubernetesSettings(
        # `config_dir / p` is `p` itself when `p` is absolute
        kubeconfig=None if raw.kubeconfig is None else config_dir / raw.kubeconfig,
        context=raw.context,
        in_cluster=raw.in_cluster,
        namespace=raw.namespace,
        priority_classes=dict(raw.priority_classes),
        kueue_queue=raw.kueue_queue,
        price_per_gpu_hour=dict(raw.price_per_gpu_hour),
        owner=raw.owner,
        finished_ttl_s=raw.finished_ttl_s,
        watch_timeout_s=raw.watch_timeout_s,
        request_timeout_s=raw.request_timeout_s,
        node_pools=tuple(p.parsed() for p in raw.node_pools),
    )
