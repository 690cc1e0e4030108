from tests.connectors.contract import ConnectorContract


class TestSimContract(ConnectorContract):
    pass
