"""Label and field selectors as the API server reads them (the equality-based subset).

Label selectors: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (does not exist), comma-joined
(https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors).
Field selectors: `path=v`, `path==v`, `path!=v` on a dotted path such as `spec.nodeName`
or `status.phase` (https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/).
Node selector terms of a required node affinity: ORed terms of ANDed `matchExpressions` on
the node's labels and `matchFields` on its `metadata.name`
(https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#node-affinity).
Taints: a NoSchedule or NoExecute taint no toleration of the pod matches keeps it off the
node; a toleration matches on its key (empty with Exists: any), value (Equal) or any value
(Exists), and effect (empty: any)
(https://kubernetes.io/docs/reference/kubernetes-api/definitions/toleration-v1/).
"""

from __future__ import annotations

import re
from typing import Any

Requirement = tuple[str, str, str]  # (key, op, value); op in "=", "!=", "exists", "!exists"

_TERM = re.compile(
    r"^(?P<neg>!)?(?P<key>[A-Za-z0-9_./-]+)(?:(?P<op>==|!=|=)(?P<value>[A-Za-z0-9_.-]*))?$"
)


def parse_selector(text: str) -> list[Requirement]:
    """Parse an equality-based selector; raises ValueError on anything else (set-based)."""
    out: list[Requirement] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        m = _TERM.match(raw)
        if m is None or (m["neg"] and m["op"]):
            raise ValueError(f"unable to parse requirement: {raw!r}")
        if m["op"] is None:
            out.append((m["key"], "!exists" if m["neg"] else "exists", ""))
        else:
            out.append((m["key"], "!=" if m["op"] == "!=" else "=", m["value"]))
    return out


def _holds(value: str | None, op: str, wanted: str) -> bool:
    if op == "exists":
        return value is not None
    if op == "!exists":
        return value is None
    if op == "=":
        return value == wanted
    return value != wanted


def matches_labels(obj: dict[str, Any], selector: list[Requirement]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(_holds(labels.get(k), op, v) for k, op, v in selector)


def matches_fields(obj: dict[str, Any], selector: list[Requirement]) -> bool:
    def lookup(path: str) -> str | None:
        node: Any = obj
        for part in path.split("."):
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return None if node is None else str(node)

    return all(_holds(lookup(k) or "", op, v) for k, op, v in selector)


def _requirement(value: str | None, req: dict[str, Any]) -> bool:
    op, values = req.get("operator"), req.get("values") or []
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    raise ValueError(f"operator {op!r} is not supported by the fake")


def matches_node(node: dict[str, Any], terms: list[dict[str, Any]]) -> bool:
    """Whether the node satisfies a required node affinity's `nodeSelectorTerms`."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    fields = {"metadata.name": meta.get("name")}

    def term_holds(term: dict[str, Any]) -> bool:
        exprs = term.get("matchExpressions") or []
        field_reqs = term.get("matchFields") or []
        if not exprs and not field_reqs:
            return False  # an empty term matches no objects
        return all(_requirement(labels.get(r["key"]), r) for r in exprs) and all(
            _requirement(fields.get(r["key"]), r) for r in field_reqs
        )

    return any(term_holds(t) for t in terms)


def tolerated(node: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    """Whether a pod with `tolerations` may be scheduled onto the node, by its taints."""

    def matches(tol: dict[str, Any], taint: dict[str, Any]) -> bool:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            return False
        operator = tol.get("operator") or "Equal"
        if not tol.get("key"):
            return operator == "Exists"
        if tol["key"] != taint.get("key"):
            return False
        return operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or "")

    return all(
        taint.get("effect") not in ("NoSchedule", "NoExecute")
        or any(matches(tol, taint) for tol in tolerations)
        for taint in (node.get("spec") or {}).get("taints") or []
    )
