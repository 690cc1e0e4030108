"""Node pools: declared by selector and taints, kept as pools, their pods selected and
tolerated; the fake scheduler refuses a taint the pod does not tolerate."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from broker.domain.enums import Health, JobKind, Tier
from broker.domain.errors import ConfigError
from broker.domain.fleet import NodePoolScope
from connectors.kubernetes.node_pools import NodePool, Taint, Toleration
from connectors.kubernetes.settings import parse
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, placement_for
from tests.connectors.kubernetes.test_settings import site_settings

JOBS = "/apis/batch/v1/namespaces/gpu-broker/jobs"
TRAIN_TAINT = {"key": "gpu", "value": "train", "effect": "NoSchedule"}
INFER_TAINT = {"key": "gpu", "value": "infer", "effect": "NoSchedule"}
TRAIN = NodePool(
    name="train",
    selector={"pool": "train"},
    taints=(Taint(key="gpu", value="train", effect="NoSchedule"),),
    kinds=frozenset({JobKind.TRAINING}),
)
INFER = NodePool(
    name="infer",
    selector={"pool": "infer"},
    taints=(Taint(key="gpu", value="infer", effect="NoSchedule"),),
    tolerations=(Toleration(key="dedicated", operator="Exists"),),
    tiers=frozenset({Tier.P1}),
)


def settings_with(node_pools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kubeconfig": "k", "node_pools": node_pools}


# ---- settings ---------------------------------------------------------------------------


def test_node_pools_are_parsed(tmp_path: Path) -> None:
    parsed = parse(
        site_settings(
            settings_with(
                [
                    {
                        "name": "infer",
                        "selector": {"pool": "infer"},
                        "taints": [INFER_TAINT, {"key": "spot", "effect": "NoExecute"}],
                        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                        "tiers": ["P1"],
                        "kinds": ["inference"],
                    },
                    {"name": "train", "selector": {"example.com/pool": "train"}},
                ]
            )
        ),
        config_dir=tmp_path,
    )
    infer, train = parsed.node_pools
    assert infer == NodePool(
        name="infer",
        selector={"pool": "infer"},
        taints=(
            Taint(key="gpu", value="infer", effect="NoSchedule"),
            Taint(key="spot", effect="NoExecute"),
        ),
        tolerations=(Toleration(key="dedicated", operator="Exists"),),
        tiers=frozenset({Tier.P1}),
        kinds=frozenset({JobKind.INFERENCE}),
    )
    assert train.taints == () and train.tiers == frozenset() and train.kinds == frozenset()
    assert parsed.node_pool("train") is train and parsed.node_pool("mig") is None


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        (
            [{"name": "a", "selector": {"p": "a"}, "taints": [{"key": "g", "effect": "Never"}]}],
            "node_pools.0.taints.0.effect",
        ),
        ([{"name": "a", "selector": {}}], "node_pools.0.selector"),
        (
            [{"name": "a", "selector": {"p": "a"}}, {"name": "a", "selector": {"p": "b"}}],
            "node pool names must be unique: a repeated",
        ),
        ([{"name": "Train", "selector": {"p": "a"}}], "node_pools.0.name"),
        ([{"name": "a", "selector": {"p": "a"}, "tiers": ["P9"]}], "node_pools.0.tiers.0"),
        (
            [{"name": "a", "selector": {"p": "a"}, "tolerations": [{"value": "x"}]}],
            "a toleration without a key must have operator Exists",
        ),
        ([{"name": "a", "selector": {"p": "a"}, "colour": "red"}], "node_pools.0.colour"),
    ],
    ids=["effect", "empty-selector", "duplicate", "name", "tier", "toleration", "unknown"],
)
def test_bad_node_pools_are_refused_naming_the_field(
    tmp_path: Path, pools: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match="invalid Kubernetes connector settings") as err:
        parse(site_settings(settings_with(pools)), config_dir=tmp_path)
    assert message in str(err.value)


# ---- toleration matching (the Toleration API's rules) -----------------------------------


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        (Toleration(key="gpu", value="train", effect="NoSchedule"), True),
        (Toleration(key="gpu", value="infer", effect="NoSchedule"), False),
        (Toleration(key="gpu", operator="Exists"), True),  # any value, any effect
        (Toleration(key="gpu", operator="Exists", effect="NoExecute"), False),
        (Toleration(operator="Exists"), True),  # empty key with Exists: everything
        (Toleration(key="other", operator="Exists"), False),
    ],
)
def test_tolerations_match_as_the_api_says(toleration: Toleration, tolerated: bool) -> None:
    assert toleration.tolerates(Taint(key="gpu", value="train", effect="NoSchedule")) is tolerated


# ---- inventory ----------------------------------------------------------------------------


def tainted_cluster(fake: FakeKubernetes) -> None:
    fake.add_node(o.gpu_node("train-a", labels={"pool": "train"}, taints=[TRAIN_TAINT]))
    fake.add_node(o.gpu_node("train-b", labels={"pool": "train"}, taints=[TRAIN_TAINT]))
    fake.add_node(o.gpu_node("infer-a", labels={"pool": "infer"}, taints=[INFER_TAINT]))
    fake.add_node(o.gpu_node("plain-a"))
    # tainted, and in no declared node pool: left out
    fake.add_node(
        o.gpu_node("odd-a", taints=[{"key": "team", "value": "x", "effect": "NoSchedule"}])
    )


async def test_tainted_node_pools_are_kept_as_their_own_pools(
    fake: FakeKubernetes, make_connector: MakeConnector, caplog: pytest.LogCaptureFixture
) -> None:
    tainted_cluster(fake)
    connector = make_connector(node_pools=(TRAIN, INFER))

    with caplog.at_level(logging.WARNING):
        inv = await connector.inventory()
        await connector.inventory()

    by_id = {p.id: p for p in inv.pools}
    assert sorted(by_id) == ["oslo/H100-8x", "oslo/infer/H100-8x", "oslo/train/H100-8x"]
    assert by_id["oslo/train/H100-8x"].node_names == ("train-a", "train-b")
    assert by_id["oslo/train/H100-8x"].node_pool == NodePoolScope(
        name="train", kinds=frozenset({JobKind.TRAINING})
    )
    assert by_id["oslo/infer/H100-8x"].node_pool == NodePoolScope(
        name="infer", tiers=frozenset({Tier.P1})
    )
    assert by_id["oslo/H100-8x"].node_names == ("plain-a",)
    assert by_id["oslo/H100-8x"].node_pool is None
    assert inv.site.health is Health.DEGRADED
    assert "odd-a (taint team=x:NoSchedule)" in inv.site.health_reason
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(said) == 1, "once per node and taint, not every refresh"
    assert "odd-a" in said[0] and "team=x:NoSchedule" in said[0]


async def test_without_node_pools_a_tainted_node_is_left_out(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    tainted_cluster(fake)
    inv = await make_connector().inventory()
    assert [p.node_names for p in inv.pools] == [("plain-a",)]
    assert "4 of 5 GPU nodes excluded" in inv.site.health_reason


async def test_a_taint_the_node_pool_does_not_declare_still_leaves_the_node_out(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    spot = {"key": "spot", "effect": "NoExecute"}
    fake.add_node(o.gpu_node("train-a", labels={"pool": "train"}, taints=[TRAIN_TAINT, spot]))
    inv = await make_connector(node_pools=(TRAIN,)).inventory()
    assert inv.pools == ()
    assert "train-a (taint spot:NoExecute)" in inv.site.health_reason


# ---- the manifest and the fake scheduler -------------------------------------------------


async def test_a_job_on_a_tainted_pool_gets_its_selector_and_tolerations_and_is_bound(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    tainted_cluster(fake)
    connector = make_connector(node_pools=(TRAIN, INFER))
    by_id = {p.id: p for p in (await connector.inventory()).pools}
    job = make_job(tier=Tier.P1)

    name = await connector.dispatch(
        job=job, placement=placement_for(job, by_id["oslo/infer/H100-8x"])
    )
    fake.run_job(name)

    (body,) = [r.body for r in fake.requests_to("POST", JOBS)]
    pod = body["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "pool": "infer",
        "nvidia.com/gpu.product": o.H100,
        "nvidia.com/gpu.count": "8",
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "gpu", "operator": "Equal", "value": "infer", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists"},
    ]
    (bound,) = fake.job_pods(name)
    assert bound["spec"]["nodeName"] == "infer-a"
    assert bound["status"]["phase"] != "Pending"


async def test_a_pod_without_the_toleration_stays_pending(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    """The fake scheduler honours taints as kube-scheduler does."""
    fake.add_node(o.gpu_node("train-a", labels={"pool": "train"}, taints=[TRAIN_TAINT]))
    connector = make_connector(node_pools=(TRAIN,))
    (pool,) = (await connector.inventory()).pools
    job = make_job()
    name = await connector.dispatch(job=job, placement=placement_for(job, pool))
    (body,) = [r.body for r in fake.requests_to("POST", JOBS)]
    untolerated = copy.deepcopy(body)
    untolerated["metadata"]["name"] = "no-toleration"
    untolerated["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists"},
        {"key": "gpu", "operator": "Equal", "value": "infer", "effect": "NoSchedule"},
    ]
    fake.add_job(untolerated)

    fake.run_job(name)
    fake.run_job("no-toleration")

    (bound,) = fake.job_pods(name)
    assert bound["spec"]["nodeName"] == "train-a"
    (pending,) = fake.job_pods("no-toleration")
    assert pending["status"]["phase"] == "Pending" and "nodeName" not in pending["spec"]
    assert pending["status"]["conditions"][0]["reason"] == "Unschedulable"
