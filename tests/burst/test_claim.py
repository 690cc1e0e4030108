"""The burst claim applies its decisions on the scheduling loop's one path
(`broker.scheduling.apply`): what the loop does with a placement (metrics, health marking on
an auth failure, requeue on a refused dispatch) happens when burst capacity is claimed too."""

from __future__ import annotations

from pathlib import Path

from broker.domain.enums import Health, JobState, Tier
from broker.domain.jobs import Job
from tests.burst.conftest import MakeWorld
from tests.burst.world import World, aws_site
from tests.connectors.aws.fakes import StubProxy
from tests.connectors.kubernetes import objects as o


def sample(world: World, name: str, labels: dict[str, str]) -> float:
    return world.metrics.registry.get_sample_value(name, labels) or 0.0


async def joined_burst_for_two_p1_jobs(world: World) -> list[Job]:
    """The private cluster's one node is busy, two P1 jobs wait, a burst is bought for them
    and its nodes have just joined (the next `refresh` hands the jobs their capacity)."""
    world.kube.add_node(o.gpu_node("gpu-a"))
    inv = await world.oslo.inventory()
    await world.store.sync_site(inv.site, inv.pools)
    hog = await world.submit("hog", tier=Tier.P2, duration_s=86400)
    assert await world.loop.run_once() == 1
    world.run(hog)
    await world.wait_for([hog], JobState.RUNNING)
    p1 = [await world.submit(f"serve-{i}") for i in range(2)]
    assert await world.loop.run_once() == 0
    world.clock.advance(61)
    assert "started 2 x H100" in await world.burster.plan_capacity()
    world.clock.advance(120)
    world.join(await world.connectors["aws-east"].instances())
    return p1


async def test_claimed_jobs_are_counted_like_the_loops(
    make_world: MakeWorld, proxy: StubProxy, user_data: Path
) -> None:
    world = await make_world(clouds=[aws_site(endpoint_url=proxy.url, user_data=user_data)])
    p1 = await joined_burst_for_two_p1_jobs(world)
    scheduled = sample(world, "broker_job_transitions_total", {"state": "scheduled"})
    waits = sample(world, "broker_job_wait_seconds_count", {"tier": "P1"})

    assert "2 jobs placed on it first" in await world.burster.refresh()

    await world.wait_for(p1, JobState.SCHEDULED)
    assert sample(world, "broker_job_transitions_total", {"state": "scheduled"}) == scheduled + 2
    assert sample(world, "broker_job_wait_seconds_count", {"tier": "P1"}) == waits + 2
    assert sample(world, "broker_job_wait_seconds_sum", {"tier": "P1"}) >= 2 * 181


async def test_an_auth_failure_on_claim_marks_the_site_and_requeues(
    make_world: MakeWorld, proxy: StubProxy, user_data: Path
) -> None:
    world = await make_world(clouds=[aws_site(endpoint_url=proxy.url, user_data=user_data)])
    p1 = await joined_burst_for_two_p1_jobs(world)
    world.kube.forbid("create", "jobs.batch")  # RBAC lost between the burst and its claim

    summary = await world.burster.refresh()

    assert "2 joined" in summary and "placed on it first" not in summary, summary
    oslo = next(s for s in await world.store.sites() if s.name == "oslo")
    assert oslo.health is Health.AUTH_FAILED
    assert "forbidden" in oslo.health_reason
    held = {job.id for job, _ in await world.store.active_placements()}
    for job in p1:
        detail = await world.store.get_job(job.id)
        assert detail.job.state is JobState.PENDING and job.id not in held  # GPUs released
        assert [e.reason for e in detail.events][-2:] == ["placed_on_burst", "dispatch_failed"]
