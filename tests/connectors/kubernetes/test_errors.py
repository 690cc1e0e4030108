"""Errors at the boundary (401, 403, 429, bad kubeconfigs) and `check()`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connectors.errors import AuthFailed, TransientError
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes, write_kubeconfig
from tests.connectors.kubernetes.helpers import make_job, new_token, placement_for

NODES = "/api/v1/nodes"


async def test_a_wrong_token_is_auth_failed_without_the_token(
    fake: FakeKubernetes,
    make_connector: MakeConnector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = new_token()
    kubeconfig = tmp_path / "wrong.kubeconfig"
    write_kubeconfig(kubeconfig, {"fake": (fake.url, wrong)}, current="fake")
    connector = make_connector(kubeconfig=kubeconfig)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthFailed, match="unauthorized") as err:
        await connector.inventory()

    assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert wrong not in caplog.text
    assert len(fake.requests_to("GET", NODES)) == 1  # an auth failure is not retried


async def test_revoked_credentials_fail_dispatch_and_check(
    fake: FakeKubernetes, make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    await connector.start()
    inv = await connector.inventory()
    job = make_job()
    caplog.set_level(logging.DEBUG)

    fake.reject_credentials()

    with pytest.raises(AuthFailed) as err:
        await connector.dispatch(job=job, placement=placement_for(job, inv.pools[0]))
    items = await connector.check()
    await connector.close()
    assert fake.token not in str(err.value)
    assert items and not any(item.ok for item in items)
    assert all(fake.token not in item.detail for item in items)
    assert fake.token not in caplog.text


async def test_forbidden_names_the_missing_permission(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    inv = await connector.inventory()
    job = make_job()
    fake.forbid("create", "jobs.batch")

    with pytest.raises(AuthFailed) as err:
        await connector.dispatch(job=job, placement=placement_for(job, inv.pools[0]))

    assert "forbidden: the credentials lack permission for create jobs.batch" in str(err.value)
    assert "namespace gpu-broker" in str(err.value)


async def test_throttled_calls_are_retried(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    fake.throttle(2)

    inv = await connector.inventory()

    assert inv.pools[0].nodes == 1
    assert len(fake.requests_to("GET", NODES)) == 3  # two 429s, then the answer


async def test_server_errors_are_retried(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()
    inv = await connector.inventory()
    job = make_job()
    fake.throttle(2, code=503)

    name = await connector.dispatch(job=job, placement=placement_for(job, inv.pools[0]))

    assert list(fake.jobs) == [("gpu-broker", name)]
    assert len(fake.requests_to("POST", "/apis/batch/v1/namespaces/gpu-broker/jobs")) == 3


async def test_throttling_that_outlasts_the_retries_is_transient(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = make_connector()
    fake.throttle(100)

    with pytest.raises(TransientError, match="429") as err:
        await connector.inventory()

    assert "retry after 1s" in str(err.value)
    assert len(fake.requests_to("GET", NODES)) == 5  # the Backoff's attempts


async def test_a_missing_kubeconfig_is_auth_failed(
    make_connector: MakeConnector, tmp_path: Path
) -> None:
    connector = make_connector(kubeconfig=tmp_path / "nowhere.kubeconfig")

    with pytest.raises(AuthFailed, match="No such file or directory"):
        await connector.inventory()


async def test_a_broken_kubeconfig_is_not_quoted(
    make_connector: MakeConnector, tmp_path: Path
) -> None:
    token = new_token()
    path = tmp_path / "broken.kubeconfig"
    path.write_text(f"users:\n- name: x\n  user: {{token: {token}\n  : [\n", encoding="utf-8")
    connector = make_connector(kubeconfig=path)

    with pytest.raises(AuthFailed, match="cannot load credentials") as err:
        await connector.inventory()

    assert token not in str(err.value)


async def test_an_unknown_context_is_auth_failed(
    fake: FakeKubernetes, make_connector: MakeConnector, tmp_path: Path
) -> None:
    path = tmp_path / "one.kubeconfig"
    write_kubeconfig(path, {"fake": (fake.url, fake.token)}, current="fake")
    connector = make_connector(kubeconfig=path, context="elsewhere")

    with pytest.raises(AuthFailed, match="elsewhere"):
        await connector.inventory()


async def test_check_on_a_healthy_cluster(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    connector = make_connector()

    items = {item.name: item for item in await connector.check()}

    assert all(item.ok for item in items.values()), items
    assert items["api"].detail == "reachable, Kubernetes v1.31.2"
    assert items["list nodes"].detail == "nodes visible: 1, with GPUs: 1"
    assert "create jobs in gpu-broker" in items
    assert items["namespace gpu-broker"].detail == "namespace gpu-broker is Active"
    reviews = fake.requests_to("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    create = next(
        r.body for r in reviews if r.body["spec"]["resourceAttributes"]["verb"] == "create"
    )
    assert create["spec"]["resourceAttributes"] == {
        "verb": "create",
        "group": "batch",
        "resource": "jobs",
        "namespace": "gpu-broker",
    }


async def test_check_reports_what_is_missing(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.forbid("create", "jobs.batch")
    fake.forbid("list", "nodes")
    connector = make_connector(namespace="not-there")

    items = {item.name: item for item in await connector.check()}

    assert items["api"].ok
    assert not items["list nodes"].ok
    assert "forbidden: the credentials lack permission for list nodes" in items["list nodes"].detail
    create = items["create jobs in not-there"]
    assert not create.ok and "forbidden" in create.detail and "create jobs.batch" in create.detail
    assert items["watch jobs in not-there"].ok
    namespace = items["namespace not-there"]
    assert not namespace.ok and namespace.detail == "namespace not-there does not exist"


async def test_check_when_the_server_is_down(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = make_connector()
    await fake.stop()

    items = await connector.check()

    assert not any(item.ok for item in items)
    assert "cannot reach the API server" in items[0].detail
