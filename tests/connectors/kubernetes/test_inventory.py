"""Inventory: GPU nodes grouped into pools, exclusions, and what other users hold per node."""

from __future__ import annotations

import pytest

from broker.domain.enums import Health
from broker.domain.nodes import NodeUse
from carbon.power import GPU_MODELS
from connectors.errors import TransientError
from connectors.kubernetes.catalog import PRODUCT_MODELS, canonical_model
from connectors.kubernetes.labels import OWNER_LABEL
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.conftest import MakeConnector
from tests.connectors.kubernetes.fake_api import FakeKubernetes

GPU = "nvidia.com/gpu"


def gpus(*used: int, of: int = 8) -> tuple[int, ...]:
    """Milli-GPUs in use per GPU: `used` first, the rest of the node's `of` GPUs free."""
    return (*used, *(0,) * (of - len(used)))


def test_every_product_maps_to_a_known_model() -> None:
    assert set(PRODUCT_MODELS.values()) <= set(GPU_MODELS)


@pytest.mark.parametrize(
    ("product", "model"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA-A100-SXM4-40GB", "A100"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-L40S", "L40S"),
        ("Tesla-T4-SHARED", "T4"),  # time-slicing without renameByDefault
        ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100"),  # MIG single strategy
        ("NVIDIA-RTX-A6000", "RTX-A6000"),  # unknown: a slug
        ("NVIDIA GeForce RTX 4090", "GEFORCE-RTX-4090"),
    ],
)
def test_product_labels_map_to_canonical_models(product: str, model: str) -> None:
    assert canonical_model(product) == model


async def test_nodes_are_grouped_into_pools(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("h100-b", cpu="180", memory="1900Gi"))
    fake.add_node(o.gpu_node("h100-a"))
    fake.add_node(o.gpu_node("a100-a", product=o.A100_80, gpus=4, memory_mib=81920))
    fake.add_node(o.gpu_node("l4-a", product=o.L4, gpus=1, memory_mib=23034, cpu="16"))
    fake.add_node(o.gpu_node("rtx-a", product="NVIDIA-RTX-A6000", gpus=2, memory_mib=49140))
    fake.add_node(o.cpu_node("cpu-a"))
    connector = make_connector(price_per_gpu_hour={"H100": 2.5, "L4": 0.3})

    inv = await connector.inventory()

    assert inv.site.health is Health.HEALTHY and inv.site.health_reason == ""
    pools = {p.id: p for p in inv.pools}
    assert sorted(pools) == [
        "oslo/A100-80GB-4x",
        "oslo/H100-8x",
        "oslo/L4-1x",
        "oslo/RTX-A6000-2x",
    ]
    h100 = pools["oslo/H100-8x"]
    assert (h100.gpu_model, h100.gpus_per_node, h100.nodes) == ("H100", 8, 2)
    assert h100.gpu_memory_gb == 80.0  # nominal, not GFD's 81559 MiB
    assert h100.extra["nodes"] == "h100-a,h100-b"
    assert h100.extra["product"] == o.H100
    assert h100.price_on_demand == 2.5
    assert h100.cpu_per_node == 180.0 and h100.memory_gb_per_node == 1900.0  # the smaller node
    assert h100.node_names == ("h100-a", "h100-b")
    assert h100.node_use == (NodeUse.empty(8), NodeUse.empty(8))
    assert h100.site == "oslo" and h100.updated_at is not None
    assert pools["oslo/L4-1x"].price_on_demand == 0.3
    assert pools["oslo/A100-80GB-4x"].price_on_demand == 0.0  # no price set
    rtx = pools["oslo/RTX-A6000-2x"]
    assert rtx.gpu_model == "RTX-A6000" and rtx.gpu_memory_gb == 48.0  # 49140 MiB


async def test_unusable_nodes_are_excluded_and_the_site_degraded(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    gpu_taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    soft = {"key": "spot", "value": "true", "effect": "PreferNoSchedule"}
    fake.add_node(o.gpu_node("gpu-ok", taints=[gpu_taint, soft]))
    fake.add_node(o.gpu_node("gpu-cordoned", unschedulable=True))
    fake.add_node(o.gpu_node("gpu-down", ready=False))
    fake.add_node(
        o.gpu_node(
            "gpu-infra", taints=[{"key": "dedicated", "value": "infra", "effect": "NoExecute"}]
        )
    )
    plugin_down = o.gpu_node("gpu-noplugin")
    del plugin_down["status"]["allocatable"]["nvidia.com/gpu"]  # GFD labels, no resource
    fake.add_node(plugin_down)
    fake.add_node(o.cpu_node("cpu-cordoned"))  # not a GPU node: not counted

    inv = await make_connector().inventory()

    assert [p.extra["nodes"] for p in inv.pools] == ["gpu-ok"]
    assert inv.site.health is Health.DEGRADED
    reason = inv.site.health_reason
    assert reason.startswith("4 of 5 GPU nodes excluded")
    assert "gpu-cordoned (cordoned)" in reason
    assert "gpu-down (NotReady)" in reason
    assert "gpu-infra (taint dedicated=infra:NoExecute)" in reason
    assert "gpu-noplugin (no allocatable GPUs)" in reason


async def test_gpus_held_by_other_users_are_reported_per_node(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("gpu-b"))
    fake.add_node(o.gpu_node("gpu-c"))
    fake.add_pod(o.pod("train-1", node="gpu-a", limits={GPU: "2"}))
    fake.add_pod(o.pod("train-2", node="gpu-a", limits={GPU: "1", "cpu": "4"}))
    fake.add_pod(o.pod("bound", node="gpu-b", limits={GPU: "1"}, phase="Pending"))
    fake.add_pod(o.pod("unbound", node=None, limits={GPU: "4"}, phase="Pending"))
    fake.add_pod(o.pod("done", node="gpu-b", limits={GPU: "4"}, phase="Succeeded"))
    fake.add_pod(o.pod("crashed", node="gpu-b", limits={GPU: "4"}, phase="Failed"))
    fake.add_pod(o.pod("cpu-only", node="gpu-b", limits={"cpu": "8"}))
    # The init container asks for more than the app containers: it sets the request.
    fake.add_pod(o.pod("init", node="gpu-c", limits={GPU: "1"}, init_limits={GPU: "3"}))
    # The broker's own pod is in its ledger already; another broker's is not.
    mine = {OWNER_LABEL: "gpu-broker"}
    fake.add_pod(
        o.pod("mine", namespace="gpu-broker", node="gpu-c", limits={GPU: "4"}, labels=mine)
    )
    other = {OWNER_LABEL: "broker-us"}
    fake.add_pod(o.pod("theirs", node="gpu-c", limits={GPU: "2"}, labels=other))

    inv = await make_connector().inventory()

    (pool,) = inv.pools
    assert pool.extra["nodes"] == "gpu-a,gpu-b,gpu-c"
    assert pool.node_names == ("gpu-a", "gpu-b", "gpu-c")
    # Whole GPUs take the lowest free ones, pod by pod in name order.
    assert [u.gpus for u in pool.node_use] == [
        gpus(1000, 1000, 1000),  # train-1 on GPUs 0-1, train-2 on GPU 2
        gpus(1000),  # the bound Pending pod; the CPU-only pod holds no GPU
        gpus(1000, 1000, 1000, 1000, 1000),  # init's 3, then theirs' 2 (mine is in the ledger)
    ]
    assert pool.node_used() == (3000, 1000, 5000)
    assert [u.cpu_milli for u in pool.node_use] == [4000, 8000, 0]  # limits stand in
    # The connector asked the server for live pods only.
    (pods_call,) = fake.requests_to("GET", "/api/v1/pods")
    assert pods_call.query["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed"


async def test_mig_and_time_sliced_nodes(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("mig-a", product=o.A100_80, gpus=2, mig={"3g.40gb": 4}))
    fake.add_node(o.gpu_node("mig-b", product=o.A100_80, gpus=2, mig={"1g.10gb": 7, "3g.40gb": 2}))
    fake.add_node(o.gpu_node("l4-shared", product=o.L4, gpus=1, shared_replicas=4))
    fake.add_pod(o.pod("infer", node="mig-a", limits={"nvidia.com/mig-3g.40gb": "1"}))
    fake.add_pod(o.pod("nb", node="mig-b", limits={"nvidia.com/mig-1g.10gb": "2"}))
    fake.add_pod(o.pod("dev", node="l4-shared", limits={"nvidia.com/gpu.shared": "1"}))

    inv = await make_connector().inventory()

    pools = {p.id: p for p in inv.pools}
    assert sorted(pools) == [
        "oslo/A100-80GB-2x-mig-1g.10gb-3g.40gb",
        "oslo/A100-80GB-2x-mig-3g.40gb",
        "oslo/L4-1x-shared",
    ]
    mig = pools["oslo/A100-80GB-2x-mig-3g.40gb"]
    assert mig.mig_profiles == ("3g.40gb",) and mig.gpus_per_node == 2
    assert [u.gpus for u in mig.node_use] == [(428, 0)]  # 3 of 7 slices of one GPU
    # Two 1g slices: best fit puts the second on the GPU the first partly uses.
    mixed = pools["oslo/A100-80GB-2x-mig-1g.10gb-3g.40gb"]
    assert [u.gpus for u in mixed.node_use] == [(284, 0)]
    shared = pools["oslo/L4-1x-shared"]
    assert shared.extra["time_slicing"] == "true"
    assert [u.gpus for u in shared.node_use] == [(250,)]  # one of four replicas


async def test_two_half_gpu_pods_share_one_gpu(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    # Time-slicing, two replicas per GPU: a replica is half a GPU.
    fake.add_node(o.gpu_node("l4-a", product=o.L4, gpus=2, shared_replicas=2))
    fake.add_pod(o.pod("nb-1", node="l4-a", limits={"nvidia.com/gpu.shared": "1"}))
    fake.add_pod(o.pod("nb-2", node="l4-a", limits={"nvidia.com/gpu.shared": "1"}))

    (pool,) = (await make_connector().inventory()).pools

    assert [u.gpus for u in pool.node_use] == [(1000, 0)]  # GPU 1 stays whole for a whole ask


async def test_shares_pack_after_whole_gpus_and_never_past_a_gpu(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("mig-a", product=o.A100_80, gpus=2, mig={"3g.40gb": 4}))
    fake.add_node(o.gpu_node("mig-b", product=o.A100_80, gpus=2, mig={"3g.40gb": 4}))
    # Largest share first, best fit: 3g, 3g on GPU 0 (856), then the next 3g on GPU 1.
    fake.add_pod(o.pod("a", node="mig-a", limits={"nvidia.com/mig-3g.40gb": "3"}))
    # Over-committed (more slices than the node has): the rest fills the GPUs with the
    # most room, none past 1000.
    fake.add_pod(o.pod("b", node="mig-b", limits={"nvidia.com/mig-3g.40gb": "6"}))

    (pool,) = (await make_connector().inventory()).pools

    assert [u.gpus for u in pool.node_use] == [(856, 428), (1000, 1000)]


async def test_cpu_and_memory_requests_of_other_pods_are_summed_per_node(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    fake.add_node(o.gpu_node("gpu-a"))
    fake.add_node(o.gpu_node("gpu-b"))
    # A GPU pod with requests (limits above them do not count).
    gpu_pod = o.pod("train", node="gpu-a", limits={GPU: "1", "cpu": "16", "memory": "64Gi"})
    gpu_pod["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "8", "memory": "32Gi"}
    fake.add_pod(gpu_pod)
    # A CPU-only pod on the GPU node: a limit stands in for a missing request; a sidecar
    # container adds to the sum; the pod's overhead is added on top.
    cpu_pod = o.pod("etl", node="gpu-a", limits={"cpu": "1500m", "memory": "512Mi"})
    cpu_pod["spec"]["containers"].append(
        {"name": "log", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}
    )
    cpu_pod["spec"]["overhead"] = {"cpu": "250m", "memory": "120Mi"}
    fake.add_pod(cpu_pod)
    # An init container asking for more than the containers sets the pod's request.
    init_pod = o.pod("warm", node="gpu-b", limits={"cpu": "1", "memory": "1Gi"})
    init_pod["spec"]["initContainers"] = [
        {"name": "fetch", "image": "busybox", "resources": {"requests": {"memory": "4Gi"}}}
    ]
    fake.add_pod(init_pod)
    fake.add_pod(o.pod("done", node="gpu-b", limits={"cpu": "64"}, phase="Succeeded"))
    mine = {OWNER_LABEL: "gpu-broker"}
    fake.add_pod(o.pod("mine", node="gpu-b", limits={"cpu": "32"}, labels=mine))

    (pool,) = (await make_connector().inventory()).pools

    a, b = pool.node_use
    assert a == NodeUse(gpus(1000), cpu_milli=8000 + 1500 + 100 + 250, memory_mb=32768 + 512 + 120)
    assert b == NodeUse(gpus(), cpu_milli=1000, memory_mb=4096)
    # The node's own size is its allocatable CPU and memory.
    assert (pool.cpu_per_node, pool.memory_gb_per_node) == (190.0, 2000.0)


async def test_large_lists_are_read_page_by_page(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    for i in range(5):
        fake.add_node(o.gpu_node(f"gpu-{i}"))

    inv = await make_connector(page_size=2).inventory()

    assert inv.pools[0].nodes == 5
    calls = fake.requests_to("GET", "/api/v1/nodes")
    assert len(calls) == 3
    assert "continue" not in calls[0].query and calls[1].query["continue"]


async def test_an_unreachable_api_server_is_a_transient_error(
    fake: FakeKubernetes, make_connector: MakeConnector
) -> None:
    connector = make_connector()
    await fake.stop()  # nothing listens on the port any more

    with pytest.raises(TransientError, match="cannot reach the API server"):
        await connector.inventory()
