"""Service wiring: settings → database → SDK thread pool → connectors → carbon → scheduling
loop → scheduled duties (leader only) → HTTP API.

A process serves one of three roles (`broker serve --role`). `api`: the HTTP API; it runs
no passes, follows no site and leads no duties, and wakes the schedulers through the
database (`broker.db.wake`). `scheduler`: the passes (one replica at a time when
`scheduler.exclusive`), the sites' follow loops and the duties, with only the operational
routes (health, readiness, metrics). `all` (the embedded default): both in one process.

Each resource is opened and closed in an aiohttp cleanup context, in that order, and lives
in a typed app key (`broker.api.keys`); nothing is global, so tests can run several brokers
in one process. The SDK pool is opened before the connectors and so shut down after every
connector has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

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
    REPLICA,
    ROLE,
    SDK_POOL,
    SERVING,
    SETTINGS,
    STORE,
    VERIFIER,
)
from broker.burst.burster import Burster
from broker.config import Settings, load_latency
from broker.db.capacity import CapacityStore
from broker.db.connection import create_engine, current_revision, session_factory, upgrade
from broker.db.leases import Leases, default_holder
from broker.db.repository import Store
from broker.db.sim_runs import DbRunBook
from broker.db.wake import Waker, listen
from broker.domain.clock import Clock, SystemClock
from broker.domain.enums import Health
from broker.domain.errors import ConfigError
from broker.duties.leader import Leader
from broker.metrics import Metrics
from broker.scheduling.follow import site_follow
from broker.scheduling.forecaster import DemandService
from broker.scheduling.inventory import refresh_inventory
from broker.scheduling.leased import Leased, lease_name
from broker.scheduling.loop import SchedulingLoop
from broker.scheduling.periodic import BrokerDuties
from broker.serving.controller import ServiceController
from broker.serving.load import SHIPPED_TRACE, LoadSource, TraceLoad, read_trace
from broker.serving.prometheus import PrometheusLoad
from broker.serving.settings import ServingSettings
from carbon.recorded import RECORDED_KEEP
from carbon.wiring import build_carbon
from connectors.base import BuildContext, Connector
from connectors.errors import ConnectorError
from connectors.registry import connector_class
from connectors.settings import site_from_settings
from connectors.threads import Blocking
from redaction import register, register_url
from redaction.logs import install as install_log_redaction

log = logging.getLogger(__name__)


class ServeRole(StrEnum):
    API = "api"
    SCHEDULER = "scheduler"
    ALL = "all"


def create_app(
    settings: Settings, *, clock: Clock | None = None, role: ServeRole = ServeRole.ALL
) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[SETTINGS] = settings
    app[ROLE] = role.value
    # Log records are process-wide, so is their redaction (see `redaction`).
    install_log_redaction()
    register_url(settings.database_url)
    app[REPLICA] = default_holder()
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[VERIFIER] = TokenVerifier(settings.auth.tokens)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_sdk_pool)
    app.cleanup_ctx.append(_fleet)
    app.cleanup_ctx.append(_carbon)
    app.cleanup_ctx.append(_scheduler)
    app.cleanup_ctx.append(_scheduled)
    add_api(app, v1=role is not ServeRole.SCHEDULER)
    return app


def _service_load(
    settings: ServingSettings, *, session: aiohttp.ClientSession | None, config_dir: Path
) -> LoadSource:
    """The services' load: each one's Prometheus query, or the demo fleet's trace."""
    if settings.load == "prometheus":
        assert session is not None and settings.prometheus_url is not None
        token = None
        if settings.prometheus_token_file is not None:
            path = config_dir / settings.prometheus_token_file
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read serving.prometheus_token_file {path}: {exc.strerror}"
                ) from None
            register(token)
        return PrometheusLoad(
            session=session,
            url=settings.prometheus_url,
            timeout_s=settings.prometheus_timeout_s,
            token=token,
        )
    trace = read_trace(settings.sim_trace or SHIPPED_TRACE, settings.sim_column)
    return TraceLoad(per_minute=trace, speed=settings.sim_speed, peak=settings.sim_peak)


def _schedules(app: web.Application) -> bool:
    """Whether this process runs passes, follows sites and leads duties."""
    return app[ROLE] != ServeRole.API


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
        config_dir=settings.config_dir,
        blocking=app[SDK_POOL],
        clock=app[CLOCK],
        sim=settings.sim,
        runs=DbRunBook(sessions=session_factory(app[ENGINE])),
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
        if _schedules(app) and not settings.burst.targets:  # else `_scheduled` reads it
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
    """The scheduling loop; where this process schedules, its passes and the sites' follow
    loops, each while this replica holds its lease, and the wake-up listener."""
    settings, connectors, engine = app[SETTINGS], app[CONNECTORS], app[ENGINE]
    waker = Waker(engine)
    session = aiohttp.ClientSession() if settings.serving.load == "prometheus" else None
    loop = SchedulingLoop(
        store=app[STORE],
        connectors=connectors,
        carbon=app[CARBON].source,
        latency=load_latency(settings),
        settings=settings.scheduler,
        clock=app[CLOCK],
        metrics=app[METRICS],
        power=settings.power_table(),
        publish=waker.wake,
    )
    app[LOOP] = loop
    app[SERVING] = ServiceController(
        store=app[STORE],
        loop=loop,
        clock=app[CLOCK],
        metrics=app[METRICS],
        load=_service_load(settings.serving, session=session, config_dir=settings.config_dir),
        settings=settings.serving,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        if _schedules(app):
            tasks = await _start_scheduling(app, loop)
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await waker.close()
        if session is not None:
            await session.close()


async def _start_scheduling(app: web.Application, loop: SchedulingLoop) -> list[asyncio.Task[None]]:
    settings, clock = app[SETTINGS].scheduler, app[CLOCK]
    leases = Leases(sessions=session_factory(app[ENGINE]), clock=clock)
    leased = [
        site_follow(
            site=name,
            connector=c,
            loop=loop,
            leases=leases,
            holder=app[REPLICA],
            settings=settings.follow,
        )
        for name, c in app[CONNECTORS].items()
    ]

    def alone(name: str, what: str, body: Callable[[], Coroutine[Any, Any, None]]) -> Leased:
        """`body` run by one replica at a time, with the follow leases' timings."""
        return Leased(
            name=lease_name(name),
            what=what,
            leases=leases,
            holder=app[REPLICA],
            clock=clock,
            lease_s=settings.follow.lease_s,
            renew_s=settings.follow.renew_s,
            body=body,
        )

    leased.append(alone("serving", "the service controller", app[SERVING].run))
    if settings.exclusive:
        leased.append(alone("scheduler", "the scheduling passes", loop.run))
    # Take over the sites and the passes nobody holds before serving, as a restart did.
    for each in leased:
        await each.step()
    tasks = [asyncio.create_task(each.run(), name=f"lease:{i}") for i, each in enumerate(leased)]
    if not settings.exclusive:
        tasks.append(asyncio.create_task(loop.run(), name="scheduling-loop"))
    tasks.append(
        asyncio.create_task(
            listen(
                app[ENGINE], lambda capacity: loop.wake(capacity_changed=capacity, publish=False)
            ),
            name="wake-listener",
        )
    )
    return tasks


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
    leader = Leader(
        engine=app[ENGINE],
        duties=duties,
        settings=settings.schedule,
        clock=clock,
        holder=app[REPLICA],
    )
    app[DEMAND], app[LEADER], app[CAPACITY] = demand, leader, capacity
    if burster is not None:
        app[BURSTER] = burster
    if _schedules(app):
        await leader.start()
    try:
        yield
    finally:
        await leader.stop()
