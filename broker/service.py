"""Service wiring: settings → database → SDK thread pool → connectors → carbon → scheduling
loop → scheduled duties (leader only) → HTTP API.

Each resource is opened and closed in an aiohttp cleanup context, in that order, and lives
in a typed app key (`broker.api.keys`); nothing is global, so tests can run several brokers
in one process. The SDK pool is opened before the connectors and so shut down after every
connector has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
from aiohttp import web

from broker.api.app import add_api
from broker.api.auth import TokenVerifier
from broker.api.keys import (
    BURSTER,
    CAPACITY,
    CARBON,
    CLOCK,
    CONNECTORS,
    DEMAND,
    ENGINE,
    LEADER,
    LOOP,
    METRICS,
    SDK_POOL,
    SETTINGS,
    STORE,
    VERIFIER,
)
from broker.burst.burster import Burster
from broker.config import Settings, load_latency
from broker.db.capacity import CapacityStore
from broker.db.connection import create_engine, current_revision, session_factory, upgrade
from broker.db.repository import Store
from broker.domain.clock import Clock, SystemClock
from broker.domain.enums import Health
from broker.duties.leader import Leader
from broker.metrics import Metrics
from broker.scheduling.forecaster import DemandService
from broker.scheduling.inventory import refresh_inventory
from broker.scheduling.loop import SchedulingLoop
from broker.scheduling.periodic import BrokerDuties
from carbon.recorded import RECORDED_KEEP
from carbon.wiring import build_carbon
from connectors.base import BuildContext, Connector
from connectors.errors import ConnectorError
from connectors.registry import connector_class
from connectors.settings import site_from_settings
from connectors.threads import Blocking

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[VERIFIER] = TokenVerifier(settings.auth.tokens)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_sdk_pool)
    app.cleanup_ctx.append(_fleet)
    app.cleanup_ctx.append(_carbon)
    app.cleanup_ctx.append(_scheduler)
    app.cleanup_ctx.append(_scheduled)
    add_api(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].database_url)
    try:
        await upgrade(engine)
        log.info("database schema at revision %s", await current_revision(engine))
        app[ENGINE] = engine
        app[STORE] = Store(sessions=session_factory(engine), clock=app[CLOCK])
        yield
    finally:
        await engine.dispose()


async def _sdk_pool(app: web.Application) -> AsyncIterator[None]:
    """The bounded thread pool every connector runs its blocking SDK calls in."""
    with Blocking(app[SETTINGS].sdk_threads) as pool:
        app[SDK_POOL] = pool
        yield


async def _fleet(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    context = BuildContext(
        config_dir=settings.config_dir, blocking=app[SDK_POOL], clock=app[CLOCK], sim=settings.sim
    )
    connectors: dict[str, Connector] = {}
    try:
        for site in settings.sites:
            connectors[site.name] = connector_class(site.kind).from_settings(
                site=site, context=context
            )
        for site in settings.sites:
            await store.ensure_site(
                replace(
                    site_from_settings(site),
                    health=Health.UNREACHABLE,
                    health_reason="not read yet",
                )
            )
        started: dict[str, Connector] = {}
        for name, connector in connectors.items():
            try:
                await connector.start()
            except ConnectorError as exc:
                log.warning("site %s is unreachable at start-up: %s", name, exc)
                await store.set_site_health(name, Health.UNREACHABLE, str(exc))
                continue
            started[name] = connector
        if not settings.burst.targets:  # else `_scheduled` reads it through the burster
            log.info("inventory: %s", await refresh_inventory(store=store, connectors=started))
        for known in await store.sites():
            if known.name not in connectors:
                await store.set_site_health(known.name, Health.UNREACHABLE, "not configured")
        app[CONNECTORS] = connectors
        yield
    finally:
        await asyncio.gather(*(c.close() for c in connectors.values()), return_exceptions=True)


async def _carbon(app: web.Application) -> AsyncIterator[None]:
    """The carbon chain; one HTTP session for all live providers, only when any is set."""
    settings, clock = app[SETTINGS], app[CLOCK]
    session = aiohttp.ClientSession() if settings.carbon.live_configured else None
    try:
        setup = build_carbon(
            settings.carbon, session=session, now=clock.now, config_dir=settings.config_dir
        )
        if setup.recorded is not None:  # what earlier runs observed, for the own forecaster
            since = clock.now() - RECORDED_KEEP
            setup.recorded.add(await app[STORE].readings_since(since))
        app[CARBON] = setup
        log.info("carbon intensity from %s", setup.description)
        yield
    finally:
        if session is not None:
            await session.close()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    connectors = app[CONNECTORS]
    loop = SchedulingLoop(
        store=app[STORE],
        connectors=connectors,
        carbon=app[CARBON].source,
        latency=load_latency(app[SETTINGS]),
        settings=app[SETTINGS].scheduler,
        clock=app[CLOCK],
        metrics=app[METRICS],
        power=app[SETTINGS].power_table(),
    )
    app[LOOP] = loop
    await loop.reconcile()
    tasks = [asyncio.create_task(loop.run(), name="scheduling-loop")]
    tasks += [
        asyncio.create_task(loop.follow(c), name=f"follow:{name}")
        for name, c in app[CONNECTORS].items()
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _scheduled(app: web.Application) -> AsyncIterator[None]:
    """Periodic duties, run by whichever replica holds the lease (`broker.duties`), and
    the burster they drive when bursting is configured."""
    settings, clock, store, loop = app[SETTINGS], app[CLOCK], app[STORE], app[LOOP]
    connectors: dict[str, Connector] = app[CONNECTORS]
    demand = DemandService(store=store, clock=clock, quantile=settings.burst.forecast_quantile)
    capacity = CapacityStore(sessions=session_factory(app[ENGINE]), clock=clock)
    burster: Burster | None = None
    if settings.burst.targets:
        burster = Burster(
            settings=settings.burst,
            store=store,
            capacity=capacity,
            connectors=connectors,
            engine=loop.engine,
            applier=loop.applier,
            latency=loop.latency,
            carbon=loop.carbon,
            clock=clock,
            forecast=demand,
            on_capacity=lambda: loop.wake(capacity_changed=True),
        )
        # The first inventory read goes through the burster, so burst nodes it has not yet
        # handed to their jobs never reach the ledger.
        summary = await refresh_inventory(
            store=store, connectors=connectors, visible=burster.visible
        )
        log.info("inventory: %s", summary)
    duties = BrokerDuties(
        store=store,
        connectors=connectors,
        carbon=app[CARBON],
        demand=demand,
        capacity=burster,
        clock=clock,
        visible=None if burster is None else burster.visible,
    )
    leader = Leader(engine=app[ENGINE], duties=duties, settings=settings.schedule, clock=clock)
    app[DEMAND], app[LEADER], app[CAPACITY] = demand, leader, capacity
    if burster is not None:
        app[BURSTER] = burster
    await leader.start()
    try:
        yield
    finally:
        await leader.stop()
