"""Following Jobs by list+watch: updates once each, 410 re-lists, reconnects, adopt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from broker.domain.enums import JobState
from connectors.base import StatusUpdate
from connectors.kubernetes.connector import KubernetesConnector
from connectors.kubernetes.status import parse_time
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, next_update, placement_for

JOBS = "/apis/batch/v1/namespaces/gpu-broker/jobs"


async def started(fake: FakeKubernetes, make_connector: MakeConnector) -> KubernetesConnector:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    await connector.start()
    return connector


async def dispatch(connector: KubernetesConnector, job_id: str) -> str:
    job = make_job(job_id)
    inv = await connector.inventory()
    return await connector.dispatch(job=job, placement=placement_for(job, inv.pools[0]))


async def rest(connector: KubernetesConnector, stream: AsyncIterator[StatusUpdate]) -> list[str]:
    """Close the connector and return what the stream still had, as "job:state" strings."""
    await connector.close()
    return [f"{u.job_id}:{u.state.value}" async for u in stream]


def watches(fake: FakeKubernetes) -> list[dict[str, str]]:
    return [r.query for r in fake.requests_to("GET", JOBS) if r.query.get("watch")]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait (up to 5 s) for something the connector does in the background."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def wait_for_watch(fake: FakeKubernetes) -> None:
    await eventually(lambda: fake.watch_count > 0, "the connector opens a watch")


async def test_running_then_succeeded_once_each(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch(connector, "job-a")

    fake.run_job(name)
    running = await next_update(stream)
    fake.run_job(name)  # another MODIFIED with pods still active: no second RUNNING
    fake.finish_job(name, succeeded=True)
    done = await next_update(stream)

    assert (running.job_id, running.state, running.reason) == ("job-a", JobState.RUNNING, "started")
    assert running.at == parse_time(fake.job(name)["status"]["startTime"])
    assert (done.state, done.reason) == (JobState.SUCCEEDED, "CompletionsReached")
    assert done.at == parse_time(fake.job(name)["status"]["conditions"][-1]["lastTransitionTime"])
    assert await rest(connector, stream) == []
    # The watch asked for bookmarks and started from the list's resourceVersion.
    first = watches(fake)[0]
    assert first["allowWatchBookmarks"].lower() == "true"
    assert first["labelSelector"] == "gpu-broker/owner=gpu-broker"
    assert int(first["resourceVersion"]) > 0 and int(first["timeoutSeconds"]) == 5


async def test_failure_reports_the_condition_and_the_pods_reason(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    oom = await dispatch(connector, "job-oom")
    pull = await dispatch(connector, "job-pull")

    fake.run_job(oom)
    assert (await next_update(stream)).state is JobState.RUNNING
    fake.finish_job(oom, succeeded=False, container_reason="OOMKilled", exit_code=137)
    failed = await next_update(stream)
    fake.finish_job(
        pull,
        succeeded=False,
        reason="DeadlineExceeded",
        waiting=("ImagePullBackOff", 'Back-off pulling image "nvcr.io/x:1"'),
    )
    never_ran = await next_update(stream)

    assert (failed.job_id, failed.state, failed.reason) == (
        "job-oom",
        JobState.FAILED,
        "BackoffLimitExceeded",
    )
    assert "Job has reached the specified backoff limit" in failed.detail
    assert "container main terminated: OOMKilled (exit code 137)" in failed.detail
    assert (never_ran.job_id, never_ran.reason) == ("job-pull", "DeadlineExceeded")
    assert "container main waiting: ImagePullBackOff" in never_ran.detail
    # The pod was found through the Job's own selector.
    pod_lookups = fake.requests_to("GET", "/api/v1/namespaces/gpu-broker/pods")
    assert pod_lookups[0].query["labelSelector"].startswith("batch.kubernetes.io/controller-uid=")
    assert await rest(connector, stream) == []


async def test_expired_watch_relists_without_losing_or_repeating(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    a = await dispatch(connector, "job-a")
    b = await dispatch(connector, "job-b")
    fake.run_job(a)
    fake.run_job(b)
    assert {(await next_update(stream)).job_id for _ in range(2)} == {"job-a", "job-b"}
    lists_before = len(fake.requests_to("GET", JOBS)) - len(watches(fake))

    # The live watch ends with ERROR 410, and job-a finishes before the connector is back.
    fake.expire_versions()
    fake.finish_job(a, succeeded=True)
    update = await next_update(stream)
    fake.finish_job(b, succeeded=False)
    last = await next_update(stream)

    assert (update.job_id, update.state) == ("job-a", JobState.SUCCEEDED)
    assert (last.job_id, last.state) == ("job-b", JobState.FAILED)
    lists_after = len(fake.requests_to("GET", JOBS)) - len(watches(fake))
    assert lists_after == lists_before + 1  # re-listed once
    assert await rest(connector, stream) == []


async def test_watch_from_a_compacted_version_gets_410_and_relists(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    a = await dispatch(connector, "job-a")
    fake.run_job(a)
    assert (await next_update(stream)).state is JobState.RUNNING
    await wait_for_watch(fake)
    before = len(watches(fake))
    lists_before = len(fake.requests_to("GET", JOBS)) - before

    # The connection drops, then the versions it would resume from are compacted away.
    fake.drop_watches()
    fake.expire_versions(kick=False)
    fake.finish_job(a, succeeded=True)

    assert (await next_update(stream)).state is JobState.SUCCEEDED
    await eventually(
        lambda: int(watches(fake)[-1]["resourceVersion"]) >= fake.oldest_version,
        "a watch from the new list's version",
    )
    retried = [int(w["resourceVersion"]) for w in watches(fake)[before:]]
    assert retried[0] < fake.oldest_version  # tried to resume, was told 410
    assert len(fake.requests_to("GET", JOBS)) - len(watches(fake)) == lists_before + 1
    assert await rest(connector, stream) == []


async def test_dropped_connection_reconnects_and_misses_nothing(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    a = await dispatch(connector, "job-a")
    fake.run_job(a)
    assert (await next_update(stream)).state is JobState.RUNNING
    await wait_for_watch(fake)
    seen_version = fake.job(a)["metadata"]["resourceVersion"]

    fake.drop_watches()
    fake.finish_job(a, succeeded=True)  # happens while the connector is disconnected

    assert (await next_update(stream)).state is JobState.SUCCEEDED
    # It resumed from the last version it had seen, without listing again.
    assert watches(fake)[-1]["resourceVersion"] == seen_version
    assert len(fake.requests_to("GET", JOBS)) - len(watches(fake)) == 1
    assert await rest(connector, stream) == []


async def test_bookmarks_move_the_resume_version(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    connector.updates()  # following starts with the stream
    await wait_for_watch(fake)
    fake.touch(7)  # writes the watch does not see
    fake.bookmark()
    bookmarked = fake.resource_version
    await asyncio.sleep(0.05)  # let the bookmark reach the client

    fake.drop_watches()
    await eventually(
        lambda: len(watches(fake)) > 1 and watches(fake)[-1]["resourceVersion"] == bookmarked,
        "a watch resumed from the bookmark's version",
    )
    await connector.close()


async def test_adopt_reports_a_vanished_job_and_a_finished_one(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    first = await started(fake, make_connector)
    done = await dispatch(first, "job-done")
    fake.run_job(done)
    fake.finish_job(done, succeeded=True)
    await first.close()

    # After a restart: a new connector adopts both jobs the broker had running.
    connector = make_connector()
    await connector.start()
    stream = connector.updates()
    inv = await connector.inventory()
    gone = make_job("job-gone")
    finished = make_job("job-done")
    await connector.adopt(job=gone, placement=placement_for(gone, inv.pools[0]))
    await connector.adopt(
        job=finished, placement=placement_for(finished, inv.pools[0], external_id=done)
    )

    updates: dict[str, StatusUpdate] = {}
    for _ in range(2):
        update = await next_update(stream)
        updates[update.job_id] = update
    assert updates["job-gone"].state is JobState.FAILED
    assert updates["job-gone"].reason == "vanished"
    assert updates["job-done"].state is JobState.SUCCEEDED
    # The watch's initial list shows job-done as well: still only one update for it.
    await asyncio.sleep(0.1)
    assert await rest(connector, stream) == []


async def test_a_job_deleted_outside_the_broker_fails_as_vanished(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch(connector, "job-a")
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING

    fake.delete_job_outside(name)

    update = await next_update(stream)
    assert (update.state, update.reason) == (JobState.FAILED, "vanished")
    assert await rest(connector, stream) == []


async def test_a_cancelled_job_reports_nothing_more(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = await started(fake, make_connector)
    stream = connector.updates()
    name = await dispatch(connector, "job-a")
    fake.run_job(name)
    assert (await next_update(stream)).state is JobState.RUNNING

    await connector.cancel(job_id="job-a", external_id=name, reason="preempted")
    await asyncio.sleep(0.1)  # the DELETED event arrives

    assert await rest(connector, stream) == []


async def test_close_stops_the_watch_promptly(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = make_connector(watch_timeout_s=300)
    await connector.start()
    stream = connector.updates()
    await wait_for_watch(fake)
    loop = asyncio.get_running_loop()

    began = loop.time()
    await connector.close()

    assert loop.time() - began < 1.0
    assert [u async for u in stream] == []  # updates() ends after close
    await eventually(lambda: fake.watch_count == 0, "the server sees the watch end")


async def test_only_a_reader_of_the_stream_watches(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    """A replica that does not follow the site (another holds its lease) opens no watch;
    ending the stream ends the watch."""
    connector = await started(fake, make_connector)
    await dispatch(connector, "job-quiet")
    await asyncio.sleep(0.2)
    assert fake.watch_count == 0 and watches(fake) == []
    stream = connector.updates()
    await wait_for_watch(fake)
    reader = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.05)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await stream.aclose()  # type: ignore[attr-defined]
    await eventually(lambda: fake.watch_count == 0, "the server sees the watch end")
    await connector.close()
