"""Label and field selectors as the API server reads them (the equality-based subset).

Label selectors: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (does not exist), comma-joined
(https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors).
Field selectors: `path=v`, `path==v`, `path!=v` on a dotted path such as `spec.nodeName`
or `status.phase` (https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/).
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
