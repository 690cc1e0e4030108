"""The `burst:` settings and what the burster refuses to start with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.burst.burster import Burster
from broker.burst.gather import ANY_MODEL, ShortfallSource, peak_shortfall
from broker.burst.settings import BurstSettings
from broker.db.capacity import CapacityStore
from broker.db.connection import create_engine, session_factory
from broker.db.repository import Store
from broker.domain.clock import ManualClock
from broker.domain.engine import Engine, EngineSettings
from broker.domain.enums import Tier
from broker.domain.latency import LatencyMatrix
from broker.domain.objective import Weights
from broker.metrics import Metrics
from broker.scheduling.apply import Applier
from broker.scheduling.forecaster import DemandService
from tests.burst.helpers import NOW
from tests.burst.world import INTENSITY, FixedCarbon


def test_defaults_burst_nothing_and_never_for_p3_waits() -> None:
    s = BurstSettings()
    assert not s.enabled and s.targets == ()
    assert s.wait_target_s == {Tier.P1: 60.0, Tier.P2: 1800.0}
    assert s.spot_tiers == frozenset({Tier.P3})
    assert (s.weights.cost, s.weights.latency, s.weights.carbon) == (0.4, 0.2, 0.4)


def test_invalid_settings_are_refused() -> None:
    target = {"provider": "aws-east", "joins": "oslo"}
    with pytest.raises(ValidationError, match="may appear once"):
        BurstSettings.model_validate({"targets": [target, target]})
    with pytest.raises(ValidationError):
        BurstSettings.model_validate({"max_instance": 3})  # a typo is not ignored
    with pytest.raises(ValidationError):
        BurstSettings.model_validate({"forecast_quantile": 1.5})


def as_source(service: DemandService) -> ShortfallSource:
    return service  # mypy checks that the service's demand outlook is what the burster reads


def test_any_model_is_the_forecasters_label() -> None:
    from broker.demand.history import ANY_MODEL as FORECASTERS

    assert ANY_MODEL == FORECASTERS


async def test_the_burster_needs_its_targets_configured_and_may_be_off(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    sessions = session_factory(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"))
    store = Store(sessions=sessions, clock=clock)
    parts = {
        "store": store,
        "applier": Applier(store=store, connectors={}, clock=clock, metrics=Metrics()),
        "capacity": CapacityStore(sessions=sessions, clock=clock),
        "engine": Engine(
            EngineSettings(weights={t: Weights(cost=1, latency=1, carbon=1) for t in Tier})
        ),
        "latency": LatencyMatrix({}),
        "carbon": FixedCarbon(INTENSITY),
        "clock": clock,
    }
    targets = [{"provider": "aws-east", "joins": "oslo"}]
    with pytest.raises(ValueError, match="not configured"):
        Burster(
            settings=BurstSettings.model_validate({"enabled": True, "targets": targets}),
            connectors={},
            **parts,  # type: ignore[arg-type]
        )
    off = Burster(settings=BurstSettings(), connectors={}, **parts)  # type: ignore[arg-type]
    assert await off.plan_capacity() == "burst is off"
    assert await off.reclaim_idle() == "no burst targets"


def test_the_forecast_peak_per_model_over_the_look_ahead() -> None:
    @dataclass
    class Row:
        at: datetime
        gpu_model: str
        shortfall: float

    rows = [Row(NOW, "H100", 4.0), Row(NOW, "H100", 9.0), Row(NOW, "L4", 0.0), Row(NOW, "any", 3)]
    assert peak_shortfall(rows) == ({"H100": 9.0}, 3.0)
