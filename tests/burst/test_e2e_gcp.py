"""End to end on Compute Engine (the fake server), and across both clouds: zone and target
failover, the failure memory expiring, jobs landing on the capacity bought for them, idle
capacity released, never under running work, and strays cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.domain.capacity import ActionKind, ActionState
from broker.domain.enums import JobState, Tier
from connectors.gcp.connector import GcpConnector
from tests.burst.conftest import MakeWorld
from tests.burst.world import A100, Forecast, World, aws_site, gcp_key, gcp_site
from tests.connectors.aws.conftest import owned_ids, raw_ec2
from tests.connectors.aws.fakes import StubProxy
from tests.connectors.gcp.fake_compute import FakeCompute
from tests.connectors.kubernetes import objects as o

OWNED = {"gpu-broker-owner": "gpu-broker", "gpu-broker-site": "gcp-central"}


def gcp(world: World) -> GcpConnector:
    connector = world.connectors["gcp-central"]
    assert isinstance(connector, GcpConnector)
    return connector


async def private_node(world: World, node: dict[str, object]) -> None:
    world.kube.add_node(node)
    inv = await world.oslo.inventory()
    await world.store.sync_site(inv.site, inv.pools)


async def test_a_queue_bursts_to_compute_engine_drains_and_nothing_is_left(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    compute.exhaust("us-central1-a")  # the first zone is out of A100s
    world = await make_world(clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))])
    await private_node(world, o.gpu_node("a100-priv", product=A100, gpus=1, memory_mib=40960))
    hog = await world.submit("hog", tier=Tier.P2, gpus=1, models=("A100",), duration_s=86400)
    assert await world.loop.run_once() == 1
    world.run(hog)
    queue = [await world.submit(f"infer-{i}", gpus=1, models=("A100",)) for i in range(3)]
    assert await world.loop.run_once() == 0

    world.clock.advance(90)
    summary = await world.burster.plan_capacity()
    assert "started 3 x A100 on gcp-central in us-central1-b" in summary, summary
    instances = await gcp(world).instances()
    assert len(instances) == 3 and {i.zone for i in instances} == {"us-central1-b"}
    assert compute.live(OWNED) == {i.id for i in instances}

    world.clock.advance(60)
    world.join(instances, product=A100, gpus=1)  # GKE/kubeadm names nodes after their VMs
    assert "3 jobs placed on it first" in await world.burster.refresh()
    assert await world.pool_nodes("oslo/A100-1x") == 4
    for job in queue:
        world.run(job)
    await world.wait_for(queue, JobState.RUNNING)
    world.clock.advance(600)
    for job in queue:
        world.finish(job)
    await world.wait_for(queue, JobState.SUCCEEDED)
    world.clock.advance(601)
    summary = await world.burster.reclaim_idle()
    assert summary.count("released") == 3, summary

    assert await gcp(world).instances() == []
    assert compute.live(OWNED) == set()
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.state is ActionState.RELEASED and burst.cost_usd is not None
    assert burst.cost_usd == pytest.approx(3 * 3.67339 * (60 + 600 + 601) / 3600, rel=1e-3)
    assert await world.pool_nodes("oslo/A100-1x") == 1


async def test_an_idle_node_between_busy_ones_is_released_and_their_bookings_stay(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    world = await make_world(clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))])
    queue = [await world.submit(f"infer-{i}", gpus=1, models=("A100",)) for i in range(3)]
    world.clock.advance(90)
    assert "started 3 x A100 on gcp-central" in await world.burster.plan_capacity()
    instances = await gcp(world).instances()
    world.clock.advance(60)
    first, middle, last = sorted(world.join(instances, product=A100, gpus=1))
    assert "3 jobs placed on it first" in await world.burster.refresh()
    for job in queue:
        world.run(job)
    await world.wait_for(queue, JobState.RUNNING)
    on = {}
    for job in queue:
        placement = (await world.store.get_job(job.id)).placement
        assert placement is not None
        (on[job.id],) = placement.node_names
    assert sorted(on.values()) == [first, middle, last]  # one job per node

    # the job on the middle node ends: that node, and only it, goes after the TTL
    (done,) = [j for j in queue if on[j.id] == middle]
    world.finish(done)
    await world.wait_for([done], JobState.SUCCEEDED)
    world.clock.advance(601)
    summary = await world.burster.reclaim_idle()
    assert summary.count("released") == 1 and f"released {middle}" in summary, summary
    world.leave([middle])
    assert {i.id for i in await gcp(world).instances()} == {first, last}
    # the ledger still books the others' jobs on their own nodes, by name
    (pool,) = [p for p in await world.store.pools() if p.id == "oslo/A100-1x"]
    assert dict(zip(pool.names(), pool.node_used(), strict=True)) == {first: 1000, last: 1000}

    rest = [j for j in queue if j is not done]
    for job in rest:
        world.finish(job)
    await world.wait_for(rest, JobState.SUCCEEDED)
    (pool,) = [p for p in await world.store.pools() if p.id == "oslo/A100-1x"]
    assert pool.node_used() == (0, 0)
    world.clock.advance(601)
    assert (await world.burster.reclaim_idle()).count("released") == 2
    assert compute.live(OWNED) == set()


async def test_a_refusing_target_fails_over_and_is_tried_again_once_forgotten(
    make_world: MakeWorld,
    compute: FakeCompute,
    tmp_path: Path,
    proxy: StubProxy,
    moto_url: str,
    user_data: Path,
) -> None:
    compute.exhaust("us-central1-b")  # the only zone with H100s (a3-highgpu-8g)
    world = await make_world(
        clouds=[
            gcp_site(compute, key_file=gcp_key(compute, tmp_path)),
            aws_site(endpoint_url=proxy.url, user_data=user_data),
        ],
    )
    first = await world.submit("serve-1")
    world.clock.advance(61)
    summary = await world.burster.plan_capacity()
    # Compute Engine is cheaper and cleaner, so it is asked first; it refuses, and the
    # same pass fails over to EC2
    assert "1 x H100 on gcp-central refused (CapacityUnavailable)" in summary, summary
    assert "started 1 x H100 on aws-east" in summary, summary
    by_site = {b.provider_site: b for b in await world.actions(ActionKind.BURST)}
    failed, started = by_site["gcp-central"], by_site["aws-east"]
    assert failed.state is ActionState.FAILED and failed.provider_site == "gcp-central"
    assert "us-central1-b" in failed.detail
    assert started.provider_site == "aws-east" and started.for_jobs == (first.id,)

    # still remembered: another job goes straight to EC2, without asking Compute Engine
    compute.stockout.clear()
    second = await world.submit("serve-2")
    world.clock.advance(61)
    inserts = compute.count("POST")
    assert "started 1 x H100 on aws-east" in await world.burster.plan_capacity()
    assert compute.count("POST") == inserts
    # forgotten after the failure memory (15 min): Compute Engine is asked again, and serves
    third = await world.submit("serve-3")
    world.clock.advance(900)
    summary = await world.burster.plan_capacity()
    assert "started 1 x H100 on gcp-central" in summary, summary
    served = [b for b in await world.actions(ActionKind.BURST) if b.instance_ids]
    assert [(b.provider_site, b.for_jobs) for b in served] == [
        ("aws-east", (first.id,)),
        ("aws-east", (second.id,)),
        ("gcp-central", (third.id,)),
    ]

    # nothing ever joins: every instance is released after the join timeout, on both clouds
    world.clock.advance(901)
    summary = await world.burster.reclaim_idle()
    assert summary.count("no node joined oslo") == 3, summary
    assert compute.live(OWNED) == set()
    assert owned_ids(raw_ec2(moto_url), site="aws-east", states=("pending", "running")) == set()
    assert {b.state for b in await world.actions(ActionKind.BURST)} == {ActionState.FAILED}


async def test_never_reclaims_under_running_non_preemptible_work(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    world = await make_world(
        clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))],
        burst={"wait_target_s": {"P2": 60}},
    )
    train = await world.submit("train", tier=Tier.P2, gpus=1, models=("A100",), duration_s=7200)
    world.clock.advance(61)
    assert "started 1 x A100" in await world.burster.plan_capacity()
    world.join(await gcp(world).instances(), product=A100, gpus=1)
    await world.burster.refresh()
    world.run(train)
    await world.wait_for([train], JobState.RUNNING)

    for _ in range(3):  # hours past the idle TTL, while the P2 job runs
        world.clock.advance(3600)
        assert "released" not in await world.burster.reclaim_idle()
    assert len(compute.live(OWNED)) == 1

    world.finish(train)
    await world.wait_for([train], JobState.SUCCEEDED)
    assert "released" not in await world.burster.reclaim_idle()  # idle from now on
    world.clock.advance(601)
    assert "released" in await world.burster.reclaim_idle()
    assert compute.live(OWNED) == set()


async def test_instances_no_burst_recorded_are_released(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    world = await make_world(clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))])
    # launched for the broker, but the answer was lost before any burst recorded it
    (stray,) = await gcp(world).provision(
        gpu_model="A100", count=1, spot=False, request_id="lost-answer"
    )
    assert "stray" not in await world.burster.reclaim_idle()  # first seen now
    world.clock.advance(901)
    assert f"released {stray.id} (stray)" in await world.burster.reclaim_idle()
    assert compute.live(OWNED) == set()
    (record,) = await world.actions(ActionKind.RECLAIM)
    assert record.instance_ids == (stray.id,) and record.detail == "stray"


async def test_burst_capacity_goes_first_to_the_jobs_it_was_bought_for(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    world = await make_world(
        clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))],
        burst={"wait_target_s": {"P1": 60, "P2": 60}},
    )
    train = await world.submit("train", tier=Tier.P2, gpus=1, models=("A100",))
    world.clock.advance(61)
    assert "started 1 x A100" in await world.burster.plan_capacity()
    # a more urgent job arrives while the instance boots
    urgent = await world.submit("urgent", tier=Tier.P1, gpus=1, models=("A100",))
    world.join(await gcp(world).instances(), product=A100, gpus=1)

    # the inventory refresh syncs the cluster through `visible`: the node is not in the
    # ledger before the burster has seen it join, so the scheduler cannot give it away
    inv = await world.burster.visible(await world.oslo.inventory())
    await world.store.sync_site(inv.site, inv.pools)
    assert await world.loop.run_once() == 0
    assert "1 job placed on it first" in await world.burster.refresh()
    assert await world.state(train) is JobState.SCHEDULED
    assert await world.loop.run_once() == 0
    assert await world.state(urgent) is JobState.PENDING  # it bursts for itself, in turn


async def test_the_forecast_bursts_ahead_and_idle_capacity_waits_for_it(
    make_world: MakeWorld, compute: FakeCompute, tmp_path: Path
) -> None:
    forecast = Forecast(short={"A100": 2.0})
    world = await make_world(
        clouds=[gcp_site(compute, key_file=gcp_key(compute, tmp_path))], forecast=forecast
    )
    summary = await world.burster.plan_capacity()  # no job waits: the forecast alone
    assert "started 2 x A100 on gcp-central" in summary, summary
    (burst,) = await world.actions(ActionKind.BURST)
    assert burst.for_jobs == () and not burst.spot and "forecast p90" in burst.reason
    assert "no burst needed" in await world.burster.plan_capacity()  # covered now
    world.join(await gcp(world).instances(), product=A100, gpus=1)
    await world.burster.refresh()

    world.clock.advance(3600)  # idle for an hour, but the forecast still wants them
    summary = await world.burster.reclaim_idle()
    assert "released" not in summary and summary.count("forecast needs 2 burst A100") == 2
    forecast.short = {"A100": 1.0}
    assert (await world.burster.reclaim_idle()).count("released") == 1
    forecast.short = {}  # nothing needs it: down to zero
    assert (await world.burster.reclaim_idle()).count("released") == 1
    assert compute.live(OWNED) == set()
