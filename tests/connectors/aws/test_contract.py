"""The shared connector contract, run against the AWS connector through its `harness`."""

from __future__ import annotations

from tests.connectors.contract import ConnectorContract


class TestAwsContract(ConnectorContract):
    pass
