"""A job's output: the pod found by its job-id label, tailLines, follow streamed from the
fake API server, errors translated and redacted, no thread left behind."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from connectors.base import Ability
from connectors.errors import AuthFailed, NotFound, TransientError
from connectors.kubernetes import pod_logs
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, placement_for

LOG = "/api/v1/namespaces/gpu-broker/pods/{}/log"


async def running(fake: FakeKubernetes, make_connector: MakeConnector) -> Any:
    """A connector, a dispatched job whose pod runs, and the pod's name."""
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    pool = (await connector.inventory()).pools[0]
    job = make_job("job-logs1")
    placement = replace(placement_for(job, pool), run="r1")
    name = await connector.dispatch(job=job, placement=placement)
    fake.run_job(name)
    (pod,) = fake.job_pods(name)
    return connector, job, placement, pod["metadata"]["name"]


async def collect(stream: Any) -> list[str]:
    return [line async for line in stream]


async def test_tail_reads_the_last_lines_of_the_main_container(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    fake.write_log(pod, "epoch 1", "epoch 2", "epoch 3")

    assert connector.supports(Ability.LOGS)
    got = await collect(connector.logs(job=job, placement=placement, tail=2, follow=False))

    assert got == ["epoch 2", "epoch 3"]
    (req,) = fake.requests_to("GET", LOG.format(pod))
    assert req.query == {"container": "main", "tailLines": "2"}
    everything = await collect(
        connector.logs(job=job, placement=placement, tail=None, follow=False)
    )
    assert everything == ["epoch 1", "epoch 2", "epoch 3"]


async def test_follow_streams_lines_until_the_container_ends(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    fake.write_log(pod, "old 1", "old 2")
    stream = connector.logs(job=job, placement=placement, tail=1, follow=True)

    assert await asyncio.wait_for(anext(stream), 5) == "old 2"
    fake.write_log(pod, "step 10", "step 20")
    assert await asyncio.wait_for(anext(stream), 5) == "step 10"
    assert await asyncio.wait_for(anext(stream), 5) == "step 20"
    fake.end_log(pod)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(stream), 5)
    (req,) = fake.requests_to("GET", LOG.format(pod))
    assert req.query["follow"] == "True" and req.query["tailLines"] == "1"


async def test_a_reader_that_goes_away_ends_the_follow_and_its_thread(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    fake.write_log(pod, "hello")
    stream = connector.logs(job=job, placement=placement, tail=None, follow=True)
    assert await asyncio.wait_for(anext(stream), 5) == "hello"
    assert fake.pod_logs.following(pod) == 1

    await asyncio.wait_for(stream.aclose(), 5)  # type: ignore[attr-defined]

    for _ in range(200):
        if fake.pod_logs.following(pod) == 0:
            break
        await asyncio.sleep(0.01)
    assert fake.pod_logs.following(pod) == 0  # the connection was closed; no_leaks: no thread


async def test_follows_are_bounded(
    fake: FakeKubernetes, make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    monkeypatch.setattr(pod_logs, "MAX_FOLLOWS", 1)
    fake.write_log(pod, "a")
    first = connector.logs(job=job, placement=placement, tail=None, follow=True)
    assert await asyncio.wait_for(anext(first), 5) == "a"
    with pytest.raises(TransientError, match="log follows are open"):
        await collect(connector.logs(job=job, placement=placement, tail=None, follow=True))
    await first.aclose()  # type: ignore[attr-defined]


async def test_the_run_s_pod_is_preferred_and_a_gone_pod_is_not_found(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    with pytest.raises(NotFound, match="no pod left"):
        await collect(
            connector.logs(job=make_job("job-never"), placement=placement, tail=None, follow=False)
        )
    assert await connector._logs.pod_of(job=job, placement=placement) == pod


async def test_provider_errors_are_translated_and_redacted(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, _ = await running(fake, make_connector)
    fake.forbid("get", "pods/log")
    with pytest.raises(AuthFailed, match="forbidden") as err:
        await collect(connector.logs(job=job, placement=placement, tail=5, follow=False))
    assert fake.token not in str(err.value)


async def test_a_printed_credential_is_redacted(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, job, placement, pod = await running(fake, make_connector)
    await connector.inventory()  # the token is registered once a request asked for it
    fake.write_log(pod, f"token is {fake.token}")
    (line,) = await collect(connector.logs(job=job, placement=placement, tail=None, follow=False))
    assert fake.token not in line and line.startswith("token is ")
