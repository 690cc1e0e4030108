"""The translation tables: GPU names, instance states, error codes, and the price catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.domain.errors import ConfigError
from carbon.power import GPU_MODELS
from connectors.aws.catalog import PriceCatalog, zone_order
from connectors.aws.faults import Denied, ZoneFull, client_error, scrub
from connectors.aws.mapping import GPU_NAMES, STATES, canonical_model, gpu_type
from connectors.aws.settings import DEFAULT_PRICE_CATALOG
from connectors.base import InstanceState
from connectors.errors import (
    AuthFailed,
    CapacityUnavailable,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
)
from tests.connectors.aws.conftest import ACCESS_KEY, SECRET


def instance_type(name: str, gpu: str, count: int, mib: int, partition: float = 1.0) -> Any:
    return {
        "InstanceType": name,
        "VCpuInfo": {"DefaultVCpus": 96},
        "MemoryInfo": {"SizeInMiB": 1179648},
        "GpuInfo": {
            "Gpus": [
                {
                    "Name": gpu,
                    "Count": count,
                    "GpuPartitionSize": partition,
                    "MemoryInfo": {"SizeInMiB": mib},
                }
            ]
        },
    }


@pytest.mark.parametrize(
    ("name", "mib", "model"),
    [
        ("A100", 40960, "A100"),
        ("A100", 81920, "A100-80GB"),
        ("V100", 16384, "V100"),
        ("V100", 32768, "V100-32GB"),
        ("H100", 81920, "H100"),
        ("H200", 144384, "H200"),
        ("A10G", 22888, "A10G"),
        ("L40S", 45776, "L40S"),
        ("T4g", 16384, None),  # Graviton instances: no power figure, no x86 images
        ("Radeon Pro V520", 8192, None),
    ],
)
def test_canonical_models(name: str, mib: int, model: str | None) -> None:
    assert canonical_model(name, mib) == model


def test_every_table_model_is_a_known_gpu() -> None:
    models = {m for variants in GPU_NAMES.values() for _, m in variants}
    assert models <= set(GPU_MODELS)


def test_gpu_type_shape() -> None:
    p4de = gpu_type(instance_type("p4de.24xlarge", "A100", 8, 81920))
    assert p4de is not None
    assert (p4de.gpu_model, p4de.gpus, p4de.gpu_memory_gb) == ("A100-80GB", 8, 80.0)
    assert (p4de.vcpus, p4de.memory_gb) == (96, 1152.0)


def test_fractional_and_gpu_less_types_are_skipped() -> None:
    assert gpu_type(instance_type("g6f.large", "L4", 0, 2861, partition=0.125)) is None
    assert gpu_type({"InstanceType": "m5.large", "VCpuInfo": {"DefaultVCpus": 2}}) is None


def test_every_ec2_state_maps() -> None:
    ec2_states = {"pending", "running", "stopping", "stopped", "shutting-down", "terminated"}
    assert set(STATES) == ec2_states
    assert STATES["shutting-down"] is InstanceState.STOPPING
    assert STATES["terminated"] is InstanceState.TERMINATED


@pytest.mark.parametrize(
    ("code", "status", "capacity", "kind"),
    [
        ("InsufficientInstanceCapacity", 500, True, ZoneFull),  # a 5xx that is not transient
        ("Unsupported", 400, True, ZoneFull),
        ("InstanceLimitExceeded", 400, True, ZoneFull),
        ("MaxSpotInstanceCountExceeded", 400, True, ZoneFull),
        ("SpotMaxPriceTooLow", 400, True, ZoneFull),
        ("Unsupported", 400, False, ConnectorError),  # only RunInstances fails over
        ("InsufficientInstanceCapacity", 500, False, TransientError),
        ("UnauthorizedOperation", 403, True, Denied),
        ("AuthFailure", 401, False, AuthFailed),
        ("InvalidClientTokenId", 403, False, AuthFailed),
        ("ExpiredToken", 400, False, AuthFailed),
        ("SignatureDoesNotMatch", 403, False, AuthFailed),
        ("RequestLimitExceeded", 503, True, TransientError),
        ("Throttling", 400, False, TransientError),
        ("InternalError", 500, False, TransientError),
        ("SomethingNew", 502, False, TransientError),
        ("InvalidInstanceID.NotFound", 400, False, NotFound),
        ("IdempotentParameterMismatch", 400, True, Conflict),
        ("InvalidParameterValue", 400, True, ConnectorError),
    ],
)
def test_error_codes(code: str, status: int, capacity: bool, kind: type[ConnectorError]) -> None:
    error = client_error(
        code=code, status=status, message="m", site="s", what="RunInstances", capacity=capacity
    )
    assert type(error) is kind
    assert str(error) == f"s: RunInstances: {code}: m"
    if isinstance(error, ZoneFull):
        assert error.code == code and isinstance(error, CapacityUnavailable)


def test_scrub_removes_key_shapes_and_caps_length() -> None:
    text = scrub(f"key {ACCESS_KEY} secret {SECRET} in-use")
    assert ACCESS_KEY not in text and SECRET not in text and "in-use" in text
    assert len(scrub("word " * 200)) <= 303


def test_shipped_catalog_prices() -> None:
    prices = PriceCatalog.load(DEFAULT_PRICE_CATALOG)
    found = prices.lookup("p4d.24xlarge", "us-east-1")
    assert found is not None
    price, exact = found
    assert exact and (price.gpu_model, price.gpus, price.on_demand) == ("A100", 8, 21.957642)
    assert price.spot == pytest.approx(8.0468) and price.snapshot == "2025-11-30"
    assert {p.gpu_model for p in prices.in_region("us-east-1")} <= set(GPU_MODELS)


def test_catalog_fallback_is_the_highest_other_region(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(
        "instance_type,region,gpu_model,gpus,on_demand_usd_h,spot_usd_h,snapshot_date\n"
        "p5.48xlarge,us-west-2,H100,8,55.04,,2025-11-30\n"
        "p5.48xlarge,eu-north-1,H100,8,60.0,20.0,2025-11-30\n"
    )
    prices = PriceCatalog.load(path)
    found = prices.lookup("p5.48xlarge", "us-east-1")
    assert found is not None and found[0].region == "eu-north-1" and found[1] is False
    assert prices.lookup("g5.xlarge", "us-east-1") is None


@pytest.mark.parametrize(
    "content",
    [
        "instance_type,region\np5.48xlarge,us-east-1\n",
        "instance_type,region,gpu_model,gpus,on_demand_usd_h,spot_usd_h,snapshot_date\n"
        "p5.48xlarge,us-east-1,H100,eight,55.04,,2025-11-30\n",
    ],
)
def test_malformed_catalog(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match="price catalog"):
        PriceCatalog.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceCatalog.load(tmp_path / "missing.csv")


def test_zone_order() -> None:
    offered = ["us-east-1c", "us-east-1a", "us-east-1b"]
    assert zone_order(offered, preferred=(), subnets={}) == (
        "us-east-1a",
        "us-east-1b",
        "us-east-1c",
    )
    assert zone_order(
        offered, preferred=("us-east-1c", "us-east-1d", "us-east-1a"), subnets={}
    ) == (
        "us-east-1c",
        "us-east-1a",
    )
    assert zone_order(offered, preferred=(), subnets={"us-east-1b": "subnet-1"}) == ("us-east-1b",)


def test_an_unknown_gpu_is_left_out_with_a_warning_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="connectors.aws.mapping"):
        assert gpu_type(instance_type("x9.48xlarge", "X9000", 8, 196608)) is None
        assert gpu_type(instance_type("x9.48xlarge", "X9000", 8, 196608)) is None
    warnings = [r.getMessage() for r in caplog.records if "X9000" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per GPU and process
    assert "x9.48xlarge" in warnings[0] and "gpu_models" in warnings[0]
