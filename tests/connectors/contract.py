"""The contract every connector keeps, run against each one through its `harness` fixture.

A connector's test folder subclasses `ConnectorContract` and provides `harness` (see
`harness.py`): the same tests then hold the simulator, Kubernetes, AWS and GCP to one
behaviour (libcloud's shared driver tests). Hooks a harness cannot offer raise
NotImplementedError and the test that needs them is skipped with that reason; abilities a
connector declares it lacks must raise `Unsupported`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from broker.domain.enums import Ability, JobKind, JobState, Tier
from broker.domain.jobs import Job, JobSpec, Resources, Workload
from connectors.base import InstanceState, StatusUpdate
from connectors.errors import AuthFailed, Unsupported
from tests.connectors.harness import Harness

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)


def contract_job(name: str = "contract") -> Job:
    spec = JobSpec(
        name=name,
        tier=Tier.P2,
        kind=JobKind.TRAINING,
        resources=Resources(gpus=1, cpu=1.0, memory_gb=4.0),
        workload=Workload(image="ghcr.io/example/train:1", command=("python", "train.py")),
        estimated_duration_s=3600,
    )
    return Job(
        id=f"job-{uuid.uuid4().hex[:12]}",
        tenant="contract-team",
        spec=spec,
        state=JobState.SCHEDULED,
        created_at=T0,
        updated_at=T0,
    )


def hook(call: Callable[[], object]) -> object:
    try:
        return call()
    except NotImplementedError as exc:
        pytest.skip(f"the harness cannot {exc or 'do this'}")


async def async_hook(call: Callable[[], Awaitable[None]]) -> None:
    try:
        await call()
    except NotImplementedError as exc:
        pytest.skip(f"the harness cannot {exc or 'do this'}")


async def next_update(harness: Harness, job_id: str, final: set[JobState]) -> StatusUpdate:
    """The first update for `job_id` in one of `final` states (running updates skipped)."""

    async def read() -> StatusUpdate:
        async for update in harness.connector.updates():
            if update.job_id == job_id and update.state in final:
                return update
        raise AssertionError("the update stream ended")

    return await asyncio.wait_for(read(), timeout=15)


class ConnectorContract:
    # ---- inventory ----------------------------------------------------------------

    async def test_inventory_describes_this_site_and_its_pools(self, harness: Harness) -> None:
        c = harness.connector
        inv = await c.inventory()
        assert inv.site.name == c.site_name
        assert inv.site.kind is c.kind
        ids = [p.id for p in inv.pools]
        assert ids, "a site offers at least one GPU pool"
        assert len(ids) == len(set(ids))
        for p in inv.pools:
            assert p.site == c.site_name
            assert p.id.startswith(f"{c.site_name}/")
            assert p.gpus_per_node > 0 and p.nodes >= 0 and p.gpu_memory_gb > 0
            assert p.price_on_demand >= 0
            assert p.price_spot is None or p.price_spot >= 0
        again = await c.inventory()
        assert [p.id for p in again.pools] == ids  # pool ids are stable

    async def test_lacked_abilities_raise_unsupported(self, harness: Harness) -> None:
        c = harness.connector
        job = contract_job()
        calls = {
            Ability.DISPATCH: lambda: c.dispatch(job=job, placement=None),  # type: ignore[arg-type]
            Ability.CANCEL: lambda: c.cancel(job_id=job.id, external_id=None, reason="t"),
            Ability.PROVISION: lambda: c.provision(
                gpu_model="H100", count=1, spot=False, request_id="x"
            ),
        }
        lacking = [a for a in calls if not c.supports(a)]
        for ability in lacking:
            with pytest.raises(Unsupported):
                await calls[ability]()
        if not lacking:
            pytest.skip("this connector lacks none of dispatch, cancel and provision")

    # ---- jobs ---------------------------------------------------------------------

    def _needs(self, harness: Harness, ability: Ability) -> None:
        if not harness.connector.supports(ability):
            pytest.skip(f"{harness.connector.kind.value} lacks {ability.value}")

    async def test_a_retried_dispatch_adopts_instead_of_duplicating(self, harness: Harness) -> None:
        self._needs(harness, Ability.DISPATCH)
        c = harness.connector
        before = await harness.remote_ids()
        job = contract_job()
        placement = await harness.placement(job)
        first = await c.dispatch(job=job, placement=placement)
        second = await c.dispatch(job=job, placement=placement)
        assert first == second
        after = await harness.remote_ids()
        assert after - before == {first}
        assert (await c.owned()).get(job.id) == first

    async def test_cancel_removes_the_job_and_a_gone_job_is_not_an_error(
        self, harness: Harness
    ) -> None:
        self._needs(harness, Ability.DISPATCH)
        c = harness.connector
        job = contract_job()
        ext = await c.dispatch(job=job, placement=await harness.placement(job))
        await c.cancel(job_id=job.id, external_id=ext, reason="preempted")
        assert ext not in await harness.remote_ids()
        await c.cancel(job_id=job.id, external_id=ext, reason="preempted")  # again: no error
        await c.cancel(job_id="job-never-was", external_id=None, reason="cancelled")

    async def test_finished_jobs_are_reported_on_the_update_stream(self, harness: Harness) -> None:
        self._needs(harness, Ability.DISPATCH)
        self._needs(harness, Ability.FOLLOW)
        c = harness.connector
        done = {JobState.SUCCEEDED, JobState.FAILED}
        ok_job, bad_job = contract_job("ok"), contract_job("bad")
        ok_ext = await c.dispatch(job=ok_job, placement=await harness.placement(ok_job))
        bad_ext = await c.dispatch(job=bad_job, placement=await harness.placement(bad_job))
        await async_hook(lambda: harness.finish(ok_ext, succeeded=True))
        update = await next_update(harness, ok_job.id, done)
        assert update.state is JobState.SUCCEEDED
        await harness.finish(bad_ext, succeeded=False)
        update = await next_update(harness, bad_job.id, done)
        assert update.state is JobState.FAILED
        assert update.reason  # a failure always says why

    # ---- errors -------------------------------------------------------------------

    async def test_rejected_credentials_fail_fast_and_never_show_the_secret(
        self, harness: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        hook(harness.reject_credentials)
        with pytest.raises(AuthFailed) as err:
            await harness.connector.inventory()
        assert harness.connector.site_name in str(err.value)
        items = await harness.connector.check()
        assert not all(i.ok for i in items)
        shown = [str(err.value), repr(err.value), caplog.text, *(i.detail for i in items)]
        shown.append(harness.connector.credentials())
        assert not [s for s in shown if harness.secret in s]

    async def test_throttled_calls_are_retried(self, harness: Harness) -> None:
        hook(lambda: harness.throttle(2))
        inv = await harness.connector.inventory()
        assert inv.pools

    async def test_check_passes_and_names_credentials_by_reference(self, harness: Harness) -> None:
        items = await harness.connector.check()
        assert items and all(i.ok for i in items), [i for i in items if not i.ok]
        for text in (harness.connector.credentials(), *(i.detail for i in items)):
            assert harness.secret not in text

    # ---- capacity -----------------------------------------------------------------

    async def test_provision_is_idempotent_and_release_leaves_nothing(
        self, harness: Harness
    ) -> None:
        self._needs(harness, Ability.PROVISION)
        c = harness.connector
        model = (await c.inventory()).pools[0].gpu_model
        got = await c.provision(gpu_model=model, count=1, spot=False, request_id="contract-1")
        assert len(got) == 1 and got[0].gpu_model == model and got[0].gpus > 0
        again = await c.provision(gpu_model=model, count=1, spot=False, request_id="contract-1")
        assert [i.id for i in again] == [i.id for i in got]
        ids = [i.id for i in got]
        assert set(ids) <= await harness.remote_ids()
        listed = {i.id: i for i in await c.instances()}
        assert listed[ids[0]].state in (InstanceState.PENDING, InstanceState.RUNNING)
        await c.release(instance_ids=ids)
        assert not set(ids) & await harness.remote_ids()
        await c.release(instance_ids=ids)  # already gone: no error
