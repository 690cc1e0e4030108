"""The capacity store on SQLite and PostgreSQL, and the fleet state read back from it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from broker.burst.accounting import fleet_state, spend
from broker.db.capacity import CapacityStore
from broker.db.connection import create_engine, session_factory, upgrade
from broker.domain.capacity import ActionKind, ActionState, BurstInstance, CapacityAction
from broker.domain.clock import ManualClock
from tests.burst.helpers import NOW


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CapacityStore]:
    engine = create_engine(database_url)
    await upgrade(engine)
    yield CapacityStore(sessions=session_factory(engine), clock=ManualClock(NOW))
    await engine.dispose()


def burst(action_id: str = "burst-1", **overrides: object) -> CapacityAction:
    values: dict[str, object] = {
        "id": action_id,
        "kind": ActionKind.BURST,
        "provider_site": "aws-east",
        "joins_site": "k8s",
        "gpu_model": "H100",
        "count": 2,
        "spot": False,
        "reason": "2 P1 jobs waited",
        "requested_at": NOW,
        "usd_per_hour": 100.0,
        "gco2e_per_hour": 4000.0,
        "state": ActionState.REQUESTED,
        "for_jobs": ("job-a", "job-b"),
        "tenants": {"nlp": 0.75, "vision": 0.25},
    }
    values.update(overrides)
    return CapacityAction(**values)  # type: ignore[arg-type]


def instance(
    instance_id: str, *, action_id: str = "burst-1", hours_ago: float = 0
) -> BurstInstance:
    return BurstInstance(
        provider_site="aws-east",
        instance_id=instance_id,
        action_id=action_id,
        gpu_model="H100",
        gpus=8,
        zone="us-east-1a",
        spot=False,
        usd_per_hour=50.0,
        gco2e_per_hour=2000.0,
        launched_at=NOW - timedelta(hours=hours_ago),
        provider_id=f"aws:///us-east-1a/{instance_id}",
    )


async def test_a_burst_is_recorded_with_its_instances(store: CapacityStore) -> None:
    await store.record_action(burst())
    await store.add_instances("burst-1", [instance("i-1"), instance("i-2")])
    await store.add_instances("burst-1", [instance("i-1"), instance("i-2")])  # a retry
    (got,) = await store.open_actions()
    assert got.instance_ids == ("i-1", "i-2") and got.tenants == {"nlp": 0.75, "vision": 0.25}
    assert got.requested_at == NOW and got.state is ActionState.REQUESTED
    assert [i.instance_id for i in await store.alive_instances()] == ["i-1", "i-2"]
    assert await store.mark_ready("burst-1", at=NOW + timedelta(minutes=3))
    assert not await store.mark_ready("burst-1", at=NOW + timedelta(minutes=4))
    ready = await store.action("burst-1")
    assert ready is not None and ready.ready_at == NOW + timedelta(minutes=3)


async def test_joining_and_idle_clocks(store: CapacityStore) -> None:
    await store.record_action(burst())
    await store.add_instances("burst-1", [instance("i-1")])
    at = NOW + timedelta(minutes=2)
    await store.mark_joined({("aws-east", "i-1"): "ip-10-0-0-1"}, at=at)
    (inst,) = await store.alive_instances()
    assert (inst.node, inst.joined_at, inst.idle_since) == ("ip-10-0-0-1", at, at)
    await store.set_idle_since({("aws-east", "i-1"): None})
    (inst,) = await store.alive_instances()
    assert inst.idle_since is None and inst.joined_at == at


async def test_releasing_the_last_instance_closes_the_burst_with_its_cost(
    store: CapacityStore,
) -> None:
    await store.record_action(burst())
    await store.add_instances("burst-1", [instance("i-1"), instance("i-2")])
    half = NOW + timedelta(minutes=30)
    reclaim = CapacityAction(
        id="reclaim-1",
        kind=ActionKind.RECLAIM,
        provider_site="aws-east",
        joins_site="k8s",
        gpu_model="H100",
        count=1,
        spot=False,
        reason="idle",
        requested_at=half,
        usd_per_hour=50.0,
        gco2e_per_hour=2000.0,
        state=ActionState.RELEASED,
        instance_ids=("i-1",),
        released_at=half,
        cost_usd=25.0,
        gco2e=1000.0,
    )
    alive = await store.alive_instances()
    await store.release(reclaim, instances=alive[:1], at=half)
    opened = await store.action("burst-1")
    assert opened is not None and opened.state is ActionState.REQUESTED  # i-2 still runs
    hour = NOW + timedelta(hours=1)
    second = replace(reclaim, id="reclaim-2", requested_at=hour, instance_ids=("i-2",))
    await store.release(second, instances=await store.alive_instances(), at=hour)
    closed = await store.action("burst-1")
    assert closed is not None and closed.state is ActionState.RELEASED
    assert closed.released_at == hour
    assert closed.cost_usd == pytest.approx(25.0 + 50.0)
    assert closed.gco2e == pytest.approx(1000.0 + 2000.0)
    assert await store.alive_instances() == []
    reasons = {i.instance_id: i.reclaim_id for i in await store.released_since(NOW)}
    assert reasons == {"i-1": "reclaim-1", "i-2": "reclaim-2"}
    kinds = [a.kind for a in await store.actions(start=NOW, end=hour + timedelta(seconds=1))]
    assert kinds == [ActionKind.BURST, ActionKind.RECLAIM, ActionKind.RECLAIM]


async def test_spend_today_and_the_failure_memory(store: CapacityStore) -> None:
    clock = ManualClock(NOW)
    yesterday = burst("burst-old", requested_at=NOW - timedelta(hours=12))
    await store.record_action(yesterday)
    # launched 12 h ago, at 10:00 UTC: 10 h of it fall on today
    await store.add_instances("burst-old", [instance("i-old", action_id="burst-old", hours_ago=12)])
    await store.record_action(burst("burst-failed", state=ActionState.FAILED, count=1))
    now = clock.now()
    today = await store.instances_between(
        start=now.replace(hour=0, minute=0, second=0, microsecond=0), end=now
    )
    tenants = {a.id: a.tenants for a in await store.actions_by_id(i.action_id for i in today)}
    total, by_tenant = spend(today, tenants_of=tenants, start=now.replace(hour=0), end=now)
    assert total == pytest.approx(500.0)  # 10 h x $50
    assert by_tenant == pytest.approx({"nlp": 375.0, "vision": 125.0})

    async def fleet_at(seconds: float) -> tuple[object, object]:
        at = NOW + timedelta(seconds=seconds)
        state = fleet_state(
            now=at,
            alive=await store.alive_instances(),
            open_actions=await store.open_actions(),
            failures=await store.failures_since(at - timedelta(seconds=900)),
            today=today,
            tenants_of=tenants,
            gpus_per_instance={},
            failure_memory_s=900,
        )
        return state.failed_until, state.alive

    failed, alive = await fleet_at(60)
    assert failed == {("aws-east", "H100"): NOW + timedelta(seconds=900)}
    assert alive == {("aws-east", "H100"): 1}
    failed, _ = await fleet_at(901)
    assert failed == {}
