"""Connectors: how the broker reads and drives each kind of site.

One interface (`connectors.base.Connector`), one registry line per kind
(`connectors.registry`), one subpackage per provider. SDK imports stay inside their
subpackage and are loaded only when a site of that kind is configured.
"""
