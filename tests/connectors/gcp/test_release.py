"""Releasing instances and finding them again by their labels, also after a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import InstanceState
from connectors.errors import Conflict
from connectors.gcp.connector import GcpConnector
from tests.connectors.gcp.conftest import OWNED, SITE, MakeConnector
from tests.connectors.gcp.fake_compute import FakeCompute

ZONES = "/compute/v1/projects/broker-test/zones"


async def test_release_deletes_and_waits_and_a_gone_instance_is_fine(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    got = await connector.provision(gpu_model="T4", count=2, spot=True, request_id="rel")
    ids = [i.id for i in got]
    assert fake.live(OWNED) == set(ids)
    await connector.release(instance_ids=ids)
    assert fake.live(OWNED) == set()  # both delete operations were waited on until DONE
    assert fake.count(f"DELETE {ZONES}/us-central1-a/instances/") == 2
    await connector.release(instance_ids=[*ids, "gb-never-existed-0"])
    assert fake.count(f"DELETE {ZONES}/") == 2
    assert await connector.instances() == []


async def test_release_refuses_instances_it_does_not_own_and_deletes_nothing(
    connector: GcpConnector, fake: FakeCompute
) -> None:
    [mine] = await connector.provision(gpu_model="A100", count=1, spot=False, request_id="m")
    fake.add_instance("us-central1-b", "prod-db-1", labels={"team": "data"})
    other_site = {**OWNED, "gpu-broker-site": "gcp-europe-west4"}
    fake.add_instance("us-central1-c", "gb-other-site-0", labels=other_site)
    for stranger in ("prod-db-1", "gb-other-site-0"):
        with pytest.raises(Conflict, match=stranger):
            await connector.release(instance_ids=[mine.id, stranger])
    assert fake.count("DELETE ") == 0
    assert {"prod-db-1", "gb-other-site-0", mine.id} <= fake.live({})


async def test_a_restarted_broker_finds_its_instances_by_label(
    make_connector: MakeConnector, fake: FakeCompute
) -> None:
    first = make_connector()
    spot = await first.provision(gpu_model="T4", count=1, spot=True, request_id="a")
    [a100] = await first.provision(gpu_model="A100", count=1, spot=False, request_id="b")
    await first.close()
    fake.add_instance("us-central1-a", "not-ours", labels={"gpu-broker-owner": "someone-else"})

    again = make_connector()  # new objects, nothing shared with `first`
    found = {i.id: i for i in await again.instances()}
    assert sorted(found) == sorted([spot[0].id, a100.id])
    t4 = found[spot[0].id]
    assert (t4.pool_id, t4.gpu_model, t4.gpus, t4.zone, t4.spot) == (
        f"{SITE}/n1-standard-8-nvidia-tesla-t4x1",
        "T4",
        1,
        "us-central1-a",
        True,
    )
    assert t4.launched_at == datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # -08:00 in the API
    assert found[a100.id] == a100
    # the label filter was sent to the API (and the fake applies it)
    lists = [c for c in fake.calls if "/aggregated/instances" in c]
    assert all("labels.gpu-broker-owner" in c and "labels.gpu-broker-site" in c for c in lists)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("STAGING", InstanceState.PENDING),
        ("STOPPING", InstanceState.STOPPING),
        ("SUSPENDED", InstanceState.TERMINATED),
        ("TERMINATED", InstanceState.TERMINATED),
    ],
)
async def test_instances_report_mapped_states(
    connector: GcpConnector, fake: FakeCompute, status: str, state: InstanceState
) -> None:
    [inst] = await connector.provision(gpu_model="L4", count=1, spot=False, request_id="st")
    fake.instances[inst.zone][inst.id]["status"] = status
    [found] = await connector.instances()
    assert (found.state, found.extra["status"]) == (state, status)
