"""The shared carbon-source contract, run against the shipped static table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carbon.static import StaticTableSource
from tests.carbon.contract import SourceContract


class TestStaticTableContract(SourceContract):
    @pytest.fixture
    def source_under_test(self) -> StaticTableSource:
        return StaticTableSource.default()

    @pytest.fixture
    def known_zone(self) -> str:
        return "DE"

    @pytest.fixture
    def unknown_zone(self) -> str:
        return "XX-NOWHERE"

    @pytest.fixture
    def now(self) -> datetime:
        return datetime(2025, 3, 1, 10, 20, tzinfo=UTC)
