"""Two simulator connectors sharing one run book behave like two replicas on one cluster:
a run dispatched by one is followed by the other, a cancel from either stops it, and a run
replaced by a later one of the same job never reports again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from broker.config import load_settings
from broker.domain.clock import SystemClock
from broker.domain.enums import JobState
from connectors.base import BuildContext, StatusUpdate
from connectors.sim.connector import SimConnector
from connectors.sim.runbook import MemoryRunBook
from connectors.threads import Blocking
from tests.conftest import DEMO_CONFIG
from tests.connectors.contract import contract_job
from tests.connectors.sim.conftest import SimHarness


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SimConnector, SimConnector]]:
    settings = load_settings(
        DEMO_CONFIG, overrides={"sim.speed": 3600.0, "sim.start_delay_s": 0.05}
    )
    book = MemoryRunBook()
    with Blocking(1) as pool:
        context = BuildContext(
            config_dir=settings.config_dir,
            blocking=pool,
            clock=SystemClock(),
            sim=settings.sim,
            runs=book,
        )
        one, two = (
            SimConnector.from_settings(site=settings.sites[0], context=context) for _ in "ab"
        )
        try:
            yield one, two
        finally:
            await one.close()
            await two.close()


async def _collect(conn: SimConnector, into: list[StatusUpdate]) -> None:
    async for update in conn.updates():
        into.append(update)


async def test_one_dispatches_the_other_follows_and_a_cancel_reaches_it(
    pair: tuple[SimConnector, SimConnector],
) -> None:
    dispatcher, follower = pair
    seen: list[StatusUpdate] = []
    following = asyncio.create_task(_collect(follower, seen))
    harness = SimHarness(dispatcher)
    done = replace(
        contract_job("done"), spec=replace(contract_job().spec, estimated_duration_s=360)
    )
    stopped = contract_job("stopped")  # an hour: runs a second at this speed
    old = replace(
        contract_job("replaced"), spec=replace(contract_job().spec, estimated_duration_s=3600)
    )
    await dispatcher.dispatch(job=done, placement=replace(await harness.placement(done), run="r1"))
    stopped_id = await dispatcher.dispatch(
        job=stopped, placement=replace(await harness.placement(stopped), run="r1")
    )
    await dispatcher.dispatch(job=old, placement=replace(await harness.placement(old), run="r1"))
    await asyncio.sleep(0.3)  # all three running on the follower
    await dispatcher.cancel(job_id=stopped.id, external_id=stopped_id, reason="preempted")
    # the same job placed again: the earlier run must never report again
    await dispatcher.dispatch(job=old, placement=replace(await harness.placement(old), run="r2"))
    await asyncio.sleep(1.6)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)

    got = [(u.job_id, u.run, u.state) for u in seen]
    assert (done.id, "r1", JobState.SUCCEEDED) in got
    assert [g for g in got if g[0] == stopped.id] == [(stopped.id, "r1", JobState.RUNNING)]
    assert [g for g in got if g[0] == old.id] == [
        (old.id, "r1", JobState.RUNNING),
        (old.id, "r2", JobState.RUNNING),
        (old.id, "r2", JobState.SUCCEEDED),
    ]
    assert set(await follower.owned()) == {done.id, old.id}  # ended runs stay a while
