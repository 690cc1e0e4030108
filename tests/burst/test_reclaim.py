"""The reclaim review alone: matching nodes, idle clocks, the TTL, and what holds a release."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from broker.burst.joined import same_layout, visible_pools
from broker.burst.reclaim import Review, ledger_of, node_slots, review
from broker.domain.capacity import BurstInstance
from broker.domain.enums import Tier
from broker.domain.fleet import GpuPool
from broker.domain.nodes import NodeUse
from broker.domain.work import RunningWork
from connectors.base import CloudInstance, InstanceState
from tests.burst.helpers import NOW, burst_settings

POOL = "k8s/H100-8x"
EARLY = NOW - timedelta(hours=2)


def inst(instance_id: str, **overrides: Any) -> BurstInstance:
    values: dict[str, Any] = {
        "provider_site": "aws-east",
        "instance_id": instance_id,
        "action_id": "burst-1",
        "gpu_model": "H100",
        "gpus": 8,
        "zone": "us-east-1a",
        "spot": False,
        "usd_per_hour": 55.0,
        "gco2e_per_hour": 2800.0,
        "launched_at": EARLY,
        "provider_id": f"aws:///us-east-1a/{instance_id}",
        "node": f"node-{instance_id}",
        "joined_at": EARLY + timedelta(minutes=3),
        "idle_since": EARLY + timedelta(minutes=3),
    }
    values.update(overrides)
    return BurstInstance(**values)


def listed(*ids: str, state: InstanceState = InstanceState.RUNNING) -> dict[str, CloudInstance]:
    return {
        i: CloudInstance(
            id=i,
            pool_id="aws-east/p5.48xlarge",
            gpu_model="H100",
            gpus=8,
            zone="us-east-1a",
            spot=False,
            state=state,
            launched_at=EARLY,
        )
        for i in ids
    }


def pool(nodes: list[str], used: tuple[int, ...] = ()) -> GpuPool:
    return GpuPool(
        id=POOL,
        site="k8s",
        gpu_model="H100",
        gpu_memory_gb=80,
        gpus_per_node=8,
        nodes=len(nodes),
        price_on_demand=2.0,
        node_names=tuple(nodes),
        node_use=tuple(NodeUse.of_total(8, milli) for milli in used),
        extra={
            "nodes": ",".join(nodes),
            "provider_ids": ",".join(
                f"aws:///us-east-1a/{n.removeprefix('node-')}" if n.startswith("node-i") else ""
                for n in nodes
            ),
        },
    )


def work(
    job_id: str, *, placed: datetime, started: datetime | None, node: int | None = 0
) -> RunningWork:
    """Work on `node` of the pool (None: a placement that names no nodes, not pinned)."""
    return RunningWork(
        job_id=job_id,
        tenant="vision",
        tier=Tier.P2,
        preemptible=False,
        pool_id=POOL,
        node_indices=() if node is None else (node,),
        milli_per_node=8000,
        gpu_model="H100",
        started_at=started,
        placed_at=placed,
    )


def run(
    instances: list[BurstInstance],
    nodes: list[str],
    *,
    used: tuple[int, ...] = (),
    running: list[RunningWork] | None = None,
    ended: list[tuple[str, datetime, datetime]] | None = None,
    keep: dict[str, float] | None = None,
    provider: dict[str, CloudInstance] | None = None,
    now: datetime = NOW,
    **settings: Any,
) -> Review:
    p = pool(nodes, used)
    return review(
        now=now,
        settings=burst_settings(idle_ttl_s=1800, **settings),
        instances=instances,
        listed={
            "aws-east": provider
            if provider is not None
            else listed(*(i.instance_id for i in instances))
        },
        slots={"k8s": node_slots([p])},
        joins_of={"aws-east": "k8s", "gcp-central": "k8s"},
        ledger=ledger_of([p]),
        work=running or [],
        ended=ended or [],
        keep_gpus=keep or {},
    )


def released(r: Review) -> list[str]:
    return [i.instance_id for i, _ in r.release]


def test_a_node_is_matched_by_provider_id_and_the_idle_clock_starts_on_joining() -> None:
    fresh = inst("i-1", node=None, joined_at=None, idle_since=None)
    r = run([fresh], ["gpu-a", "node-i-1"])
    assert r.joined == {("aws-east", "i-1"): "node-i-1"}
    assert r.release == [] and r.idle == {}  # joining starts the clock (the store sets it)


def test_idle_past_the_ttl_is_released_and_not_before() -> None:
    assert released(run([inst("i-1")], ["gpu-a", "node-i-1"])) == ["i-1"]
    recent = inst("i-1", idle_since=NOW - timedelta(minutes=29))
    assert released(run([recent], ["gpu-a", "node-i-1"])) == []


def test_work_pinned_to_other_nodes_leaves_it_idle_and_unpinned_work_keeps_it_busy() -> None:
    newer = work("j", placed=EARLY + timedelta(minutes=5), started=EARLY + timedelta(minutes=6))
    # the placement names its node (gpu-a): its pods run there and nowhere else
    assert released(run([inst("i-1")], ["gpu-a", "node-i-1"], used=(8000, 0), running=[newer]))
    # a placement that names no nodes may run on any node of its pool
    unpinned = work("j", placed=newer.placed_at, started=newer.started_at, node=None)
    r = run([inst("i-1")], ["gpu-a", "node-i-1"], used=(8000, 0), running=[unpinned])
    assert r.release == [] and r.idle == {("aws-east", "i-1"): None}
    # ... unless it was placed and started before the instance existed
    before = EARLY - timedelta(hours=1)
    older = work("j", placed=before, started=before, node=None)
    assert released(run([inst("i-1")], ["gpu-a", "node-i-1"], used=(8000, 0), running=[older]))
    # work not started yet may still land on it
    pending = work("j", placed=before, started=None, node=None)
    assert not released(run([inst("i-1")], ["gpu-a", "node-i-1"], running=[pending]))
    # a joined node out of sight (not Ready): any newer work in its pools may be on it
    r = run([inst("i-1")], ["gpu-a"], used=(8000,), running=[newer])
    assert r.release == [] and r.idle == {("aws-east", "i-1"): None}


def test_the_idle_clock_starts_when_the_last_work_ended_even_unseen() -> None:
    ended = [(POOL, EARLY + timedelta(minutes=10), NOW - timedelta(minutes=5))]
    r = run([inst("i-1")], ["gpu-a", "node-i-1"], ended=ended)
    assert r.release == [] and r.idle == {("aws-east", "i-1"): NOW - timedelta(minutes=5)}
    # an end stamped after now (a cluster clock ahead of ours) is not believed
    skewed = [(POOL, EARLY + timedelta(minutes=10), NOW + timedelta(hours=1))]
    assert released(run([inst("i-1")], ["gpu-a", "node-i-1"], ended=skewed)) == ["i-1"]


def test_an_idle_node_between_two_busy_ones_is_released() -> None:
    # the ledger and the placements know nodes by name: removing the middle node moves
    # no one's bookings, so it goes as soon as its TTL is up
    instances = [inst("i-1"), inst("i-2"), inst("i-3")]
    placed = EARLY + timedelta(minutes=5)
    running = [work(f"j{k}", placed=placed, started=placed, node=k) for k in (0, 2)]
    r = run(
        instances,
        ["node-i-1", "node-i-2", "node-i-3"],
        used=(8000, 0, 8000),
        running=running,
    )
    assert released(r) == ["i-2"] and r.held == []
    assert r.idle == {("aws-east", "i-1"): None, ("aws-east", "i-3"): None}


def test_the_forecast_keeps_what_it_still_needs() -> None:
    instances = [
        inst("i-1", idle_since=NOW - timedelta(hours=1)),
        inst("i-2", idle_since=NOW - timedelta(hours=2)),
    ]
    r = run(instances, ["node-i-1", "node-i-2"], keep={"H100": 8.0})
    assert released(r) == ["i-2"] and [i.instance_id for i, _ in r.held] == ["i-1"]


def test_never_joined_within_the_timeout_is_released() -> None:
    booting = inst("i-1", node=None, joined_at=None, idle_since=None)
    r = run([booting], ["gpu-a"], now=EARLY + timedelta(minutes=14))
    assert r.release == []
    r = run([booting], ["gpu-a"], now=EARLY + timedelta(minutes=15))
    assert [(i.instance_id, why) for i, why in r.release] == [
        ("i-1", "no node joined k8s within 15 min")
    ]


def test_instances_the_provider_no_longer_lists_are_gone() -> None:
    r = run([inst("i-1")], ["node-i-1"], provider={})
    assert [i.instance_id for i, _ in r.gone] == ["i-1"] and r.release == []
    ended = run([inst("i-1")], ["node-i-1"], provider=listed("i-1", state=InstanceState.TERMINATED))
    assert [i.instance_id for i, _ in ended.gone] == ["i-1"]


def test_nothing_is_decided_for_a_cluster_that_could_not_be_read() -> None:
    r = review(
        now=NOW,
        settings=burst_settings(),
        instances=[inst("i-1")],
        listed={"aws-east": listed("i-1")},
        slots={},
        joins_of={"aws-east": "k8s"},
        ledger={},
        work=[],
        keep_gpus={},
    )
    assert r == Review()


def test_released_nodes_are_hidden_and_vanished_pools_emptied() -> None:
    reported = pool(["gpu-a", "node-i-1", "node-i-2"])
    gone = GpuPool(
        id="k8s/L4-1x",
        site="k8s",
        gpu_model="L4",
        gpu_memory_gb=24,
        gpus_per_node=1,
        nodes=2,
        price_on_demand=0.3,
    )
    visible = visible_pools([reported], recorded=[reported, gone], hidden={"aws:///us-east-1a/i-1"})
    h100, l4 = visible
    assert (h100.nodes, h100.extra["nodes"]) == (2, "gpu-a,node-i-2")
    assert h100.extra["provider_ids"] == ",aws:///us-east-1a/i-2"
    assert (l4.id, l4.nodes) == ("k8s/L4-1x", 0)
    assert same_layout(visible, visible) and not same_layout(visible, [reported, gone])


def test_no_release_while_the_ledger_lags_the_cluster() -> None:
    p = pool(["gpu-a", "node-i-1"])
    synced_before = pool(["gpu-a"])  # the ledger has not seen node-i-1 join yet
    for ledger in ({}, ledger_of([synced_before])):
        r = review(
            now=NOW,
            settings=burst_settings(idle_ttl_s=1800),
            instances=[inst("i-1")],
            listed={"aws-east": listed("i-1")},
            slots={"k8s": node_slots([p])},
            joins_of={"aws-east": "k8s"},
            ledger=ledger,
            work=[],
            keep_gpus={},
        )
        assert r.release == [] and "not in k8s/H100-8x's ledger yet" in r.held[0][1]
