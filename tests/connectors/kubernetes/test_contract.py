"""The shared connector contract, run against the Kubernetes connector on the fake API."""

from tests.connectors.contract import ConnectorContract


class TestKubernetesContract(ConnectorContract):
    pass
