"""Typed application keys: the one place that says what lives in the app's state."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.api.auth import TokenVerifier
from broker.burst.burster import Burster
from broker.config import Settings
from broker.db.capacity import CapacityStore
from broker.db.repository import Store
from broker.domain.clock import Clock
from broker.duties.leader import Leader
from broker.metrics import Metrics
from broker.scheduling.forecaster import DemandService
from broker.scheduling.loop import SchedulingLoop
from broker.serving.controller import ServiceController
from carbon.wiring import CarbonSetup
from connectors.base import Connector
from connectors.threads import Blocking

SETTINGS = web.AppKey("settings", Settings)
REPLICA = web.AppKey("replica", str)  # this replica's holder id in leases
ROLE = web.AppKey("role", str)  # what this process serves: api, scheduler or all
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
VERIFIER = web.AppKey("verifier", TokenVerifier)
ENGINE = web.AppKey("engine", AsyncEngine)
STORE = web.AppKey("store", Store)
SDK_POOL = web.AppKey("sdk_pool", Blocking)  # the connectors' pool for blocking SDK calls
CONNECTORS = web.AppKey("connectors", dict[str, Connector])
LOOP = web.AppKey("loop", SchedulingLoop)
CARBON = web.AppKey("carbon", CarbonSetup)
DEMAND = web.AppKey("demand", DemandService)
LEADER = web.AppKey("leader", Leader)
CAPACITY = web.AppKey("capacity", CapacityStore)
BURSTER = web.AppKey("burster", Burster)  # only when burst targets are configured
SERVING = web.AppKey("serving", ServiceController)  # only where this process schedules
