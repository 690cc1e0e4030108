"""Typed application keys: the one place that says what lives in the app's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from broker.api.auth import TokenVerifier
    from broker.config import Settings
    from broker.db.repository import Store
    from broker.domain.clock import Clock
    from broker.metrics import Metrics
    from broker.scheduling.conditions import ConditionsProvider
    from broker.scheduling.loop import SchedulingLoop
    from connectors.base import Connector
    from sqlalchemy.ext.asyncio import AsyncEngine

SETTINGS = web.AppKey["Settings"]("settings")
CLOCK = web.AppKey["Clock"]("clock")
METRICS = web.AppKey["Metrics"]("metrics")
VERIFIER = web.AppKey["TokenVerifier"]("verifier")
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
ENGINE = web.AppKey["AsyncEngine"]("engine")
STORE = web.AppKey["Store"]("store")
CONNECTORS = web.AppKey["dict[str, Connector]"]("connectors")
CONDITIONS = web.AppKey["ConditionsProvider"]("conditions")
LOOP = web.AppKey["SchedulingLoop"]("loop")
