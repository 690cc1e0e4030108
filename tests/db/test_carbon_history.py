"""Observed carbon hours survive a restart (both databases); a re-observed hour is replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.db.carbon_history import CarbonHistoryStore
from broker.db.connection import create_engine, session_factory, upgrade
from broker.domain.clock import ManualClock
from carbon.recorded import Observed

T0 = datetime(2026, 12, 1, tzinfo=UTC)
H = timedelta(hours=1)


async def test_save_then_read_back_upserting(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        store = CarbonHistoryStore(sessions=session_factory(engine), clock=ManualClock(T0))
        await store.save_readings(
            [
                Observed(zone=z, hour=T0 + h * H, gco2_per_kwh=100.0 + h, source="em")
                for z in ("DE", "NO")
                for h in range(3)
            ]
        )
        await store.save_readings([Observed(zone="DE", hour=T0 + H, gco2_per_kwh=7.0, source="uk")])
        await store.save_readings([])
        got = await store.readings_since(T0 + H)
        assert [(o.zone, o.hour, o.gco2_per_kwh, o.source) for o in got] == [
            ("DE", T0 + H, 7.0, "uk"),
            ("DE", T0 + 2 * H, 102.0, "em"),
            ("NO", T0 + H, 101.0, "em"),
            ("NO", T0 + 2 * H, 102.0, "em"),
        ]
    finally:
        await engine.dispose()
