"""`broker check` for a GCP site: what the configured credentials can see and do.

Every item is a read: Compute Engine has no dry run for `instances.insert` and no
testIamPermissions for instances in general, so whether the broker may create instances is
reported as not checked rather than guessed. GPU quota comes from the region's `quotas`
(`NVIDIA_*_GPUS` and `PREEMPTIBLE_NVIDIA_*_GPUS` metrics,
https://cloud.google.com/compute/resource-usage#gpu_quota).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import CheckItem
from connectors.errors import ConnectorError

if TYPE_CHECKING:
    from connectors.gcp.client import Quota
    from connectors.gcp.connector import GcpConnector


def _gpu_quotas(quotas: tuple[Quota, ...]) -> list[Quota]:
    return [q for q in quotas if "NVIDIA_" in q.metric and q.metric.endswith("_GPUS")]


def _failed(name: str, exc: ConnectorError) -> CheckItem:
    return CheckItem(name=name, ok=False, detail=str(exc))


async def run_checks(connector: GcpConnector) -> tuple[CheckItem, ...]:
    """The check items, in order; stops after the credentials item if that one fails."""
    api = connector.api
    s = connector.settings
    items: list[CheckItem] = []
    try:
        who = await api.token()
    except ConnectorError as exc:
        return (_failed("credentials", exc),)
    items.append(CheckItem(name="credentials", ok=True, detail=f"{who}: access token obtained"))

    try:
        name = await api.project_name()
        items.append(CheckItem(name="project", ok=True, detail=f"project {name} is reachable"))
    except ConnectorError as exc:
        items.append(_failed("project", exc))

    try:
        region = await api.region(s.region)
    except ConnectorError as exc:
        items.append(_failed("region", exc))
    else:
        items.append(
            CheckItem(
                name="region",
                ok=region.status == "UP",
                detail=f"region {region.name} is {region.status}; zones {', '.join(region.zones)}",
            )
        )
        gpus = _gpu_quotas(region.quotas)
        if gpus:
            detail = ", ".join(f"{q.metric} {q.usage:g}/{q.limit:g}" for q in gpus)
            ok = any(q.limit > q.usage for q in gpus)
            items.append(CheckItem(name="gpu quota", ok=ok, detail=f"used/limit: {detail}"))
        else:
            items.append(
                CheckItem(
                    name="gpu quota",
                    ok=False,
                    detail=f"no NVIDIA GPU quota visible in {region.name}",
                )
            )

    try:
        cat = await connector.offers(refresh=True)
        keys = ", ".join(o.key for o in cat.offers) or "none"
        items.append(
            CheckItem(
                name="machine types",
                ok=bool(cat.offers),
                detail=f"{len(cat.offers)} priced GPU machine types in "
                f"{', '.join(cat.zones)}: {keys}",
            )
        )
    except ConnectorError as exc:
        items.append(_failed("machine types", exc))

    items.append(
        CheckItem(
            name="insert instances",
            ok=True,
            detail="not checked: Compute Engine has no dry run for instances.insert, "
            "so this check only reads",
        )
    )
    return tuple(items)
