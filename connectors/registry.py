"""Which connector class drives which kind of site; modules load on first use.

Adding a connector: one subpackage, one line in `_CONNECTORS`, and its contract tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from broker.domain.enums import SiteKind
from connectors.base import Connector

_CONNECTORS: Mapping[SiteKind, str] = {
    SiteKind.SIM: "connectors.sim.connector:SimConnector",
    SiteKind.KUBERNETES: "connectors.kubernetes.connector:KubernetesConnector",
    SiteKind.AWS: "connectors.aws.connector:AwsConnector",
    SiteKind.GCP: "connectors.gcp.connector:GcpConnector",
}


class UnknownConnector(LookupError):
    pass


def connector_class(kind: SiteKind) -> type[Connector]:
    """Import and return the connector class for `kind`."""
    try:
        target = _CONNECTORS[kind]
    except KeyError:
        raise UnknownConnector(f"no connector for sites of kind {kind.value!r} yet") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{target} is not a Connector")
    return cls


def available_kinds() -> frozenset[SiteKind]:
    return frozenset(_CONNECTORS)
