from tests.connectors.contract import ConnectorContract


class TestGcpContract(ConnectorContract):
    pass
