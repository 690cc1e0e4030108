"""Instance names, labels and states: the parts of the mapping that need no server."""

from __future__ import annotations

import re

import pytest

from connectors.base import InstanceState
from connectors.gcp import catalog
from connectors.gcp.mapping import INSTANCE_NAME, INSTANCE_STATES, RequestNames, instance_state

LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


@pytest.mark.parametrize(
    "request_id",
    [
        "req-1",
        "0f9a3c1e-5b0d-4c57-9d8e-1b2f3a4c5d6e",
        "Tenant/Job 42:retry",
        "x" * 200,
        "---",
        "ÄÖÜ",
    ],
)
def test_names_and_labels_are_valid_and_deterministic(request_id: str) -> None:
    names = RequestNames(request_id)
    assert LABEL_VALUE.match(names.label)
    for index in (0, 7, 999):
        name = names.instance(index)
        assert INSTANCE_NAME.match(name), name
        assert len(name) <= 63
        assert name == RequestNames(request_id).instance(index)
    assert names.instance(0) != names.instance(1)


def test_request_ids_that_slug_alike_still_get_different_names() -> None:
    a, b = RequestNames("Job/1"), RequestNames("job-1")
    assert a.label != b.label and a.instance(0) != b.instance(0)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("PROVISIONING", InstanceState.PENDING),
        ("STAGING", InstanceState.PENDING),
        ("RUNNING", InstanceState.RUNNING),
        ("STOPPING", InstanceState.STOPPING),
        ("SUSPENDING", InstanceState.STOPPING),
        ("SUSPENDED", InstanceState.TERMINATED),
        ("TERMINATED", InstanceState.TERMINATED),
        ("SOMETHING_NEW", InstanceState.PENDING),
    ],
)
def test_instance_statuses_map_through_the_table(status: str, state: InstanceState) -> None:
    assert instance_state(status) is state


def test_the_state_table_covers_the_documented_statuses() -> None:
    documented = {"PROVISIONING", "STAGING", "RUNNING", "STOPPING", "SUSPENDING", "TERMINATED"}
    assert documented <= set(INSTANCE_STATES)


def test_n1_hosts_fit_the_gpu_vcpu_limits() -> None:
    # V100 allows 12 vCPUs per GPU, P100 16 per GPU, T4 48 for one GPU
    # (https://cloud.google.com/compute/docs/gpus#n1-gpus).
    for count, host in catalog.N1_HOSTS.items():
        vcpus = int(host.rsplit("-", 1)[1])
        assert vcpus <= 12 * count
