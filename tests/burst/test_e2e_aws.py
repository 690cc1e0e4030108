"""End to end on AWS (moto's server behind the stub proxy): a queue builds on the private
cluster, the burster provisions EC2 capacity (failing over a full zone), the nodes join, the
jobs it was bought for land on them, the queue drains, and the idle capacity is released
until no instance is left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api.capacity import action_json
from broker.domain.capacity import ActionKind, ActionState, totals
from broker.domain.enums import JobState, Tier
from connectors.aws.connector import AwsConnector
from tests.burst.conftest import START, MakeWorld
from tests.burst.world import World, aws_site
from tests.connectors.aws.conftest import owned_ids, raw_ec2
from tests.connectors.aws.fakes import StubProxy
from tests.connectors.kubernetes import objects as o

POOL = "oslo/H100-8x"


def aws(world: World) -> AwsConnector:
    connector = world.connectors["aws-east"]
    assert isinstance(connector, AwsConnector)
    return connector


def running_at_moto(moto_url: str) -> set[str]:
    return owned_ids(raw_ec2(moto_url), site="aws-east", states=("pending", "running"))


async def test_a_queue_bursts_to_ec2_drains_and_nothing_is_left_running(
    make_world: MakeWorld, proxy: StubProxy, moto_url: str, user_data: Path
) -> None:
    proxy.fail(
        "InsufficientInstanceCapacity",
        status=500,
        action="RunInstances",
        zone="us-east-1a",
        message="We currently do not have sufficient p5.48xlarge capacity in us-east-1a.",
    )
    world = await make_world(clouds=[aws_site(endpoint_url=proxy.url, user_data=user_data)])
    world.kube.add_node(o.gpu_node("gpu-a"))
    await world.store.sync_site(
        (await world.oslo.inventory()).site, (await world.oslo.inventory()).pools
    )

    # the private cluster's one node is taken by a long P2 job ...
    hog = await world.submit("hog", tier=Tier.P2, duration_s=86400)
    assert await world.loop.run_once() == 1
    world.run(hog)
    await world.wait_for([hog], JobState.RUNNING)
    # ... so two P1 jobs queue up behind it (P2 work is not preemptible)
    p1 = [await world.submit(f"serve-{i}") for i in range(2)]
    assert await world.loop.run_once() == 0
    assert "no burst needed" in await world.burster.plan_capacity()  # not waited long enough

    world.clock.advance(61)  # past P1's 60 s wait target
    summary = await world.burster.plan_capacity()
    assert "started 2 x H100 on aws-east in us-east-1b" in summary, summary
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.REQUESTED and set(burst.for_jobs) == {j.id for j in p1}
    assert burst.usd_per_hour == pytest.approx(2 * 55.04)
    assert burst.gco2e_per_hour == pytest.approx(2 * 8 * 0.7 * 1.2 * 420.0)
    assert "waited past the wait target" in burst.reason
    assert [(c.zone, c.status) for c in proxy.calls("RunInstances")] == [
        ("us-east-1a", 500),
        ("us-east-1b", 200),
    ]
    instances = await aws(world).instances()
    assert {i.id for i in instances} == set(burst.instance_ids) == running_at_moto(moto_url)
    # a second pass does not burst for the same jobs again
    await world.burster.plan_capacity()
    assert len(await world.actions(ActionKind.BURST)) == 1

    # not joined yet: the capacity is not in the ledger, the jobs wait
    await world.burster.refresh()
    assert await world.pool_nodes(POOL) == 1
    assert {await world.state(j) for j in p1} == {JobState.PENDING}

    # the instances boot and their nodes join the cluster
    world.clock.advance(120)
    nodes = world.join(instances, names=["ip-10-0-1-1.ec2.internal", "ip-10-0-1-2.ec2.internal"])
    summary = await world.burster.refresh()
    assert "2 joined" in summary and "2 jobs placed on it first" in summary, summary
    assert await world.pool_nodes(POOL) == 3
    assert world.woken
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.READY and burst.ready_at == world.clock.now()
    for job in p1:
        detail = await world.store.get_job(job.id)
        assert detail.job.state is JobState.SCHEDULED and detail.placement is not None
        assert detail.placement.pool_id == POOL
        assert any(e.reason == "placed_on_burst" for e in detail.events)

    # the jobs run and finish; the queue has drained
    for job in p1:
        world.run(job)
    await world.wait_for(p1, JobState.RUNNING)
    world.clock.advance(1800)
    for job in p1:
        world.finish(job)
    await world.wait_for(p1, JobState.SUCCEEDED)

    # idle, but not for the TTL yet: kept
    assert "released" not in await world.burster.reclaim_idle()
    world.clock.advance(601)
    summary = await world.burster.reclaim_idle()
    assert summary.count("released") == 2, summary

    assert await aws(world).instances() == []
    assert running_at_moto(moto_url) == set()
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.RELEASED
    hours = (120 + 1800 + 601) / 3600  # from the provider's answer to the release
    assert burst.cost_usd == pytest.approx(2 * 55.04 * hours)
    assert burst.gco2e_per_hour is not None
    assert burst.gco2e == pytest.approx(burst.gco2e_per_hour * hours)
    (reclaim,) = await world.actions(ActionKind.RECLAIM)
    assert reclaim.instance_ids == tuple(sorted(burst.instance_ids))
    assert "idle 10 min ≥ TTL 10 min" in reclaim.reason
    assert reclaim.cost_usd == pytest.approx(burst.cost_usd)
    # what the API and the sustainability report show for the day
    now = world.clock.now()
    ran = await world.capacity.instances_between(start=START, end=now)
    day = totals(actions=await world.actions(), instances=ran, start=START, end=now)
    assert (day.bursts, day.reclaims, day.instances, day.failed_bursts) == (1, 1, 2, 0)
    assert day.cost_usd == pytest.approx(burst.cost_usd)
    assert day.kgco2e == pytest.approx((burst.gco2e or 0) / 1000)
    assert day.gpu_hours == pytest.approx(16 * hours)
    shown = action_json(burst)
    assert shown["state"] == "released" and shown["for_jobs"] == list(burst.for_jobs)
    # the released nodes are out of the ledger at once, though still Ready for a while,
    # and stay out of it when the inventory refresh syncs the cluster through `visible`
    assert await world.pool_nodes(POOL) == 1
    assert len(world.kube.nodes) == 3
    inv = await world.burster.visible(await world.oslo.inventory())
    assert [(p.id, p.nodes) for p in inv.pools] == [(POOL, 1)]
    world.leave(nodes)
    await world.burster.refresh()
    assert await world.pool_nodes(POOL) == 1
    assert await world.state(hog) is JobState.RUNNING  # private work never disturbed


async def test_a_lost_answer_is_resumed_with_the_same_request_and_no_duplicates(
    make_world: MakeWorld, proxy: StubProxy, moto_url: str, user_data: Path
) -> None:
    world = await make_world(clouds=[aws_site(endpoint_url=proxy.url, user_data=user_data)])
    await world.submit("serve")
    world.clock.advance(61)  # no private capacity at all: it waits past its target
    proxy.fail("InternalError", status=500, action="RunInstances", times=4)
    summary = await world.burster.plan_capacity()
    assert "pending" in summary, summary
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.REQUESTED and burst.instance_ids == ()
    assert running_at_moto(moto_url) == set()
    # EC2 did launch on an attempt whose answer never came back (same request, same token)
    launched = await aws(world).provision(
        gpu_model="H100", count=1, spot=False, request_id=burst.id
    )

    summary = await world.burster.plan_capacity()
    assert "started 1 x H100" in summary, summary
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.instance_ids == tuple(i.id for i in launched)
    assert running_at_moto(moto_url) == {i.id for i in launched}

    # nothing joins: after the join timeout the instance is released, the burst failed
    world.clock.advance(901)
    summary = await world.burster.reclaim_idle()
    assert "no node joined oslo within 15 min" in summary, summary
    assert running_at_moto(moto_url) == set()
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.FAILED
