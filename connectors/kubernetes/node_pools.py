"""Node pools a site declares: nodes by label selector, the taints they carry, the jobs they
take; and the Kubernetes taint/toleration matching rules the inventory and the manifest use.

GPU pools are commonly tainted (`gpu=train:NoSchedule`, a MIG pool, an inference pool) so
that only the work meant for them lands there. The broker models such pools the way Kueue
models a ResourceFlavor (`nodeLabels`, `nodeTaints`, `tolerations`): the site names the
pool's node labels and taints; a node the selector matches is offered (its declared taints
tolerated, since the broker's pods get the matching tolerations), as its own `GpuPool`s
carrying the node pool's name (`GpuPool.node_pool`), so one `GpuPool` never mixes node
pools; a pod placed there gets the selector as `nodeSelector` and a toleration per declared
taint. A node pool may be kept for some tiers or kinds of job (`broker.domain.rules`,
`RejectReason.NODE_POOL_SCOPE`), and a job may name one (`JobSpec.node_pool`).

Matching follows the Toleration API: an empty key with `Exists` matches every taint; `Exists`
matches any value of the key, `Equal` (the default) only the same value; an empty effect
matches every effect. Only NoSchedule and NoExecute keep a pod off a node (PreferNoSchedule
is a preference). References:
https://kueue.sigs.k8s.io/docs/concepts/resource_flavor/
https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/
https://kubernetes.io/docs/reference/kubernetes-api/definitions/toleration-v1/
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.domain.enums import JobKind, Tier
from broker.domain.fleet import NodePoolScope
from connectors.kubernetes import labels as L

JsonDict = dict[str, Any]

BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
Effect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
# A label key: an optional DNS-subdomain prefix and a name of 63 characters at most.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
NODE_POOL_NAME = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a DNS-1123 label


@dataclass(frozen=True, slots=True, kw_only=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Taint:
        """A node's `spec.taints[]` item."""
        return cls(
            key=str(raw.get("key") or ""),
            value=str(raw.get("value") or ""),
            effect=str(raw.get("effect") or ""),
        )

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Toleration:
    key: str = ""  # empty (with Exists): every key
    operator: str = "Equal"
    value: str = ""
    effect: str = ""  # empty: every effect

    @classmethod
    def of(cls, taint: Taint) -> Toleration:
        """The toleration of exactly this taint."""
        if taint.value:
            return cls(key=taint.key, operator="Equal", value=taint.value, effect=taint.effect)
        return cls(key=taint.key, operator="Exists", effect=taint.effect)

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value

    def as_json(self) -> JsonDict:
        out: JsonDict = {"operator": self.operator}
        if self.key:
            out["key"] = self.key
        if self.operator == "Equal":
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        return out


# What every broker pod tolerates (`manifest.pod_template`).
GPU_TOLERATION = Toleration(key=L.GPU_TAINT, operator="Exists")


def blocking(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> Taint | None:
    """The first NoSchedule/NoExecute taint none of `tolerations` tolerates, or None."""
    tols = tuple(tolerations)
    for taint in taints:
        if taint.effect in BLOCKING_EFFECTS and not any(t.tolerates(taint) for t in tols):
            return taint
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePool:
    """One declared node pool (see the module docstring)."""

    name: str
    selector: dict[str, str]
    taints: tuple[Taint, ...] = ()
    tolerations: tuple[Toleration, ...] = ()  # besides those of `taints`
    tiers: frozenset[Tier] = frozenset()  # empty: every tier
    kinds: frozenset[JobKind] = frozenset()  # empty: every kind

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector.items())

    @property
    def pod_tolerations(self) -> tuple[Toleration, ...]:
        """What a pod placed here tolerates: the GPU taint, each declared taint, and the
        pool's extra tolerations, without repeats."""
        out = [GPU_TOLERATION]
        for tol in (*(Toleration.of(t) for t in self.taints), *self.tolerations):
            if tol not in out:
                out.append(tol)
        return tuple(out)

    @property
    def scope(self) -> NodePoolScope:
        return NodePoolScope(name=self.name, tiers=self.tiers, kinds=self.kinds)


def node_pool_of(pools: Iterable[NodePool], labels: Mapping[str, str]) -> NodePool | None:
    """The first declared pool whose selector matches a node's labels, or None."""
    return next((p for p in pools if p.selects(labels)), None)


# ---- the settings' shape (a site's `connector.node_pools`) -----------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaintSettings(_Strict):
    key: Annotated[str, Field(pattern=LABEL_KEY)]
    value: Annotated[str, Field(pattern=LABEL_VALUE)] = ""
    effect: Effect


class TolerationSettings(_Strict):
    key: Annotated[str, Field(pattern=LABEL_KEY)] | None = None  # None: every key (Exists)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, Field(pattern=LABEL_VALUE)] = ""
    effect: Effect | None = None  # None: every effect

    @model_validator(mode="after")
    def _coherent(self) -> TolerationSettings:
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        return self


class NodePoolSettings(_Strict):
    """One item of `node_pools`: `name`, `selector` (node labels, all must match),
    `taints` its nodes carry, extra `tolerations`, and the `tiers` and `kinds` of job it
    takes (empty: all)."""

    name: Annotated[str, Field(pattern=NODE_POOL_NAME)]
    selector: Annotated[
        dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(pattern=LABEL_VALUE)]],
        Field(min_length=1),
    ]
    taints: list[TaintSettings] = Field(default_factory=list)
    tolerations: list[TolerationSettings] = Field(default_factory=list)
    tiers: list[Tier] = Field(default_factory=list)
    kinds: list[JobKind] = Field(default_factory=list)

    def parsed(self) -> NodePool:
        return NodePool(
            name=self.name,
            selector=dict(self.selector),
            taints=tuple(Taint(key=t.key, value=t.value, effect=t.effect) for t in self.taints),
            tolerations=tuple(
                Toleration(
                    key=t.key or "",
                    operator=t.operator,
                    value=t.value,
                    effect=t.effect or "",
                )
                for t in self.tolerations
            ),
            tiers=frozenset(self.tiers),
            kinds=frozenset(self.kinds),
        )


def unique_names(pools: list[NodePoolSettings]) -> list[NodePoolSettings]:
    """`pools`, or a ValueError naming the repeated names."""
    names = [p.name for p in pools]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"node pool names must be unique: {', '.join(repeated)} repeated")
    return pools
