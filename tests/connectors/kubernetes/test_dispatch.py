"""Dispatch, cancel and owned(): the Job the fake API server received, idempotency, 409/404."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from broker.domain.enums import Tier
from connectors.base import Ability
from connectors.errors import Conflict, NotFound, Unsupported
from connectors.kubernetes.labels import job_name
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.kubernetes.helpers import make_job, placement_for

JOBS = "/apis/batch/v1/namespaces/gpu-broker/jobs"


def posted(fake: FakeKubernetes) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests_to("POST", JOBS)]


async def pools(fake: FakeKubernetes, make_connector: MakeConnector, **settings: Any) -> Any:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("mig-a", product=o.A100_80, gpus=2, mig={"3g.40gb": 4}))
    fake.add_node(o.gpu_node("l4-a", product=o.L4, gpus=1, shared_replicas=4))
    connector = make_connector(**settings)
    inv = await connector.inventory()
    return connector, {p.id: p for p in inv.pools}


async def test_the_job_manifest(fake: FakeKubernetes, make_connector: MakeConnector) -> None:
    connector, by_id = await pools(
        fake, make_connector, priority_classes={Tier.P1: "gpu-realtime", Tier.P2: "gpu-batch"}
    )
    job = make_job("job-5e2a9c", gpus=2, tier=Tier.P2)

    name = await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))

    assert name == "gb-job-5e2a9c"
    (body,) = posted(fake)
    meta, spec = body["metadata"], body["spec"]
    assert meta["name"] == name and meta["namespace"] == "gpu-broker"
    assert meta["labels"] == {
        "gpu-broker/job-id": "job-5e2a9c",
        "gpu-broker/tenant": "vision",
        "gpu-broker/tier": "P2",
        "gpu-broker/owner": "gpu-broker",
    }
    assert meta["annotations"]["gpu-broker/job-id"] == "job-5e2a9c"
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    assert "suspend" not in spec and "completionMode" not in spec
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"]["gpu-broker/owner"] == "gpu-broker"
    assert pod["restartPolicy"] == "Never"
    assert pod["priorityClassName"] == "gpu-batch"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": o.H100, "nvidia.com/gpu.count": "8"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    # Pinned to the node the broker decided, the way DaemonSet pods are.
    assert pod["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["gpu-a"]}
                        ]
                    }
                ]
            }
        }
    }
    (container,) = pod["containers"]
    assert container["image"] == "nvcr.io/nvidia/pytorch:24.05-py3"
    assert container["command"] == ["python", "train.py"]
    assert container["env"] == [
        {"name": "BATCH", "value": "64"},
        {"name": "EPOCHS", "value": "3"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "4000m", "memory": "32768Mi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    # The server filled in what the real one does: the pod template carries the selector.
    stored = fake.job(name)
    assert stored["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"]


async def test_a_tier_without_a_priority_class_gets_none(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector, priority_classes={Tier.P1: "rt"})
    job = make_job(tier=Tier.P3)
    await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))
    assert "priorityClassName" not in posted(fake)[0]["spec"]["template"]["spec"]


async def test_finished_jobs_can_be_kept(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector, finished_ttl_s=None)
    job = make_job()
    await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))
    assert "ttlSecondsAfterFinished" not in posted(fake)[0]["spec"]


async def test_mig_and_fractional_asks(fake: FakeKubernetes, make_connector: MakeConnector) -> None:
    connector, by_id = await pools(fake, make_connector)
    mig = make_job("job-mig", mig_profile="3g.40gb")
    frac = make_job("job-frac", gpu_fraction=0.25)

    mig_pool = by_id["oslo/A100-80GB-2x-mig-3g.40gb"]
    await connector.dispatch(job=mig, placement=placement_for(mig, mig_pool))
    await connector.dispatch(job=frac, placement=placement_for(frac, by_id["oslo/L4-1x-shared"]))

    mig_body, frac_body = posted(fake)
    mig_pod = mig_body["spec"]["template"]["spec"]
    assert mig_pod["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert mig_pod["nodeSelector"]["nvidia.com/gpu.product"] == o.A100_80
    frac_limits = frac_body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert frac_limits == {"nvidia.com/gpu.shared": "1"}


async def test_gang_jobs_need_kueue(fake: FakeKubernetes, make_connector: MakeConnector) -> None:
    connector, by_id = await pools(fake, make_connector)
    gang = make_job("job-gang", gpus=8, nodes=2)

    assert not connector.supports(Ability.GANG)
    with pytest.raises(Unsupported, match="Kueue"):
        await connector.dispatch(job=gang, placement=placement_for(gang, by_id["oslo/H100-8x"]))
    assert posted(fake) == []


async def test_gang_job_with_kueue_is_an_indexed_suspended_job(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector, kueue_queue="broker")
    gang = make_job("job-gang", gpus=8, nodes=2)

    assert connector.supports(Ability.GANG)
    await connector.dispatch(job=gang, placement=placement_for(gang, by_id["oslo/H100-8x"]))

    (body,) = posted(fake)
    spec = body["spec"]
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "broker"
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["suspend"] is True


async def test_dispatch_twice_creates_one_job(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()
    placement = placement_for(job, by_id["oslo/H100-8x"])

    first = await connector.dispatch(job=job, placement=placement)
    second = await connector.dispatch(job=job, placement=placement)

    assert first == second
    assert len(posted(fake)) == 2
    assert [name for (_, name) in fake.jobs] == [first]


async def test_a_create_whose_answer_was_lost_is_adopted_on_retry(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()
    fake.lose_responses(1)  # the Job is created, the client sees a 504

    name = await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))

    assert [n for (_, n) in fake.jobs] == [name]
    assert len(posted(fake)) == 2  # the retry met 409 AlreadyExists and read the Job
    assert fake.requests_to("GET", f"{JOBS}/{name}")


async def test_a_name_taken_by_another_job_is_a_conflict(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job("job-abc")
    other = make_job("job-xyz")
    _, code = fake.add_job(
        {
            "metadata": {
                "name": job_name(job.id),
                "labels": {"gpu-broker/job-id": other.id},
                "annotations": {"gpu-broker/job-id": other.id},
            },
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}},
        }
    )
    assert code == 201

    with pytest.raises(Conflict, match="job-xyz"):
        await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))


async def test_dispatch_to_an_unknown_pool_is_not_found(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()
    placement = replace(placement_for(job, by_id["oslo/H100-8x"]), pool_id="oslo/B200-8x")

    with pytest.raises(NotFound, match="oslo/B200-8x"):
        await connector.dispatch(job=job, placement=placement)


async def test_cancel_deletes_job_and_pods_and_tolerates_a_gone_job(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()
    name = await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"]))
    fake.run_job(name)
    assert fake.job_pods(name)

    await connector.cancel(job_id=job.id, external_id=name, reason="preempted")
    await connector.cancel(job_id=job.id, external_id=name, reason="again")  # 404: fine
    await connector.cancel(job_id="job-never", external_id=None, reason="never existed")

    first, _again = fake.requests_to("DELETE", f"{JOBS}/{name}")
    assert first.query["propagationPolicy"] == "Background"
    assert fake.jobs == {} and fake.job_pods(name) == []
    assert fake.requests_to("DELETE", f"{JOBS}/{job_name('job-never')}")


async def test_owned_lists_only_this_installations_jobs(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    other_broker = make_connector(owner="broker-us")
    pool = by_id["oslo/H100-8x"]
    for job_id in ("job-1", "job-2"):
        job = make_job(job_id)
        await connector.dispatch(job=job, placement=placement_for(job, pool))
    theirs = make_job("job-3")
    await other_broker.dispatch(job=theirs, placement=placement_for(theirs, pool))

    assert await connector.owned() == {"job-1": "gb-job-1", "job-2": "gb-job-2"}
    assert await other_broker.owned() == {"job-3": "gb-job-3"}


@pytest.mark.parametrize(
    "job_id", ["job-0a1b2c", "JOB-0A1B2C", "job_with_underscores", "j" * 100, "job-é-ü"]
)
def test_job_names_are_dns_labels(job_id: str) -> None:
    name = job_name(job_id)
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert name == job_name(job_id)  # deterministic


def test_ids_that_differ_only_in_case_get_different_names() -> None:
    assert job_name("job-abc") != job_name("JOB-abc")


async def test_a_pool_of_two_products_uses_node_affinity(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("sxm", product="NVIDIA-A100-SXM4-40GB", memory_mib=40960))
    fake.add_node(o.gpu_node("pcie", product="NVIDIA-A100-PCIE-40GB", memory_mib=40960))
    connector = make_connector()
    (pool,) = (await connector.inventory()).pools
    job = make_job()

    await connector.dispatch(job=job, placement=placement_for(job, pool))

    assert pool.id == "oslo/A100-8x" and pool.extra["nodes"] == "pcie,sxm"
    pod = posted(fake)[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.count": "8"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # One term: the product and the decided node must both hold (a second term would OR).
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-SXM4-40GB"],
                }
            ],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["pcie"]}],
        }
    ]


def pinned_nodes(pod_spec: dict[str, Any]) -> list[str]:
    """The node names a pod template's required node affinity allows."""
    required = pod_spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    (term,) = required["nodeSelectorTerms"]
    (field,) = term["matchFields"]
    assert (field["key"], field["operator"]) == ("metadata.name", "In")
    return list(field["values"])


async def test_the_pod_is_pinned_to_the_decided_node_and_runs_there(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    for name in ("gpu-a", "gpu-b", "gpu-c"):
        fake.add_node(o.gpu_node(name))
    connector = make_connector()
    (pool,) = (await connector.inventory()).pools
    job = make_job(gpus=2)

    name = await connector.dispatch(job=job, placement=placement_for(job, pool, nodes=("gpu-b",)))
    fake.run_job(name)

    assert pinned_nodes(posted(fake)[0]["spec"]["template"]["spec"]) == ["gpu-b"]
    (pod,) = fake.job_pods(name)
    assert pod["spec"]["nodeName"] == "gpu-b"  # not gpu-a, the first node that would fit


async def test_a_gang_may_run_only_on_its_nodes_one_pod_on_each(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    for name in ("gpu-a", "gpu-b", "gpu-c", "gpu-d"):
        fake.add_node(o.gpu_node(name))
    connector = make_connector(kueue_queue="broker")
    (pool,) = (await connector.inventory()).pools
    gang = make_job("job-gang", gpus=4, nodes=2)

    name = await connector.dispatch(
        job=gang, placement=placement_for(gang, pool, nodes=("gpu-b", "gpu-d"))
    )
    fake.run_job(name)  # Kueue admits it: the Job controller starts both pods

    (body,) = posted(fake)
    assert body["spec"]["completionMode"] == "Indexed" and body["spec"]["suspend"] is True
    pod = body["spec"]["template"]["spec"]
    assert pinned_nodes(pod) == ["gpu-b", "gpu-d"]
    assert pod["affinity"]["podAntiAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": {"gpu-broker/job-id": "job-gang"}},
                "topologyKey": "kubernetes.io/hostname",
            }
        ]
    }
    assert sorted(p["spec"]["nodeName"] for p in fake.job_pods(name)) == ["gpu-b", "gpu-d"]


async def test_a_placement_without_node_names_is_not_pinned(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()

    await connector.dispatch(job=job, placement=placement_for(job, by_id["oslo/H100-8x"], nodes=()))

    assert "affinity" not in posted(fake)[0]["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("cpu", "memory_gb", "requests"),
    [
        (0.5, 1.5, {"cpu": "500m", "memory": "1536Mi"}),
        (0.0001, 0.001, {"cpu": "1m", "memory": "2Mi"}),  # rounded up, as the ledger rounds
    ],
)
async def test_cpu_and_memory_requests_are_the_per_node_ask(
    fake: FakeKubernetes,
    make_connector: MakeConnector,
    cpu: float,
    memory_gb: float,
    requests: dict[str, str],
) -> None:
    connector, by_id = await pools(fake, make_connector)
    job = make_job()
    res = replace(job.spec.resources, cpu=cpu, memory_gb=memory_gb)
    job = replace(job, spec=replace(job.spec, resources=res))
    placement = placement_for(job, by_id["oslo/H100-8x"])

    await connector.dispatch(job=job, placement=placement)

    container = posted(fake)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == requests
    assert (placement.cpu_milli, placement.memory_mb) == (
        int(requests["cpu"].removesuffix("m")),
        int(requests["memory"].removesuffix("Mi")),
    )
