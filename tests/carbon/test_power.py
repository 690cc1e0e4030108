"""Tests for the GPU model table and the energy formula."""

from __future__ import annotations

import dataclasses
import math

import pytest

from carbon.power import GPU_MODELS, GpuModelSpec, UnknownGpuModel, gpu_energy_kwh, gpu_model

CANONICAL = {
    "A100",
    "A100-80GB",
    "H100",
    "H200",
    "B200",
    "L4",
    "L40S",
    "A10G",
    "A10",
    "T4",
    "V100",
    "V100-32GB",
    "P100",
    "MI300X",
}


def test_table_has_exactly_the_canonical_models() -> None:
    assert set(GPU_MODELS) == CANONICAL
    assert all(spec.name == name for name, spec in GPU_MODELS.items())


@pytest.mark.parametrize(
    ("name", "memory_gb", "board_power_w"),
    [
        ("A100", 40, 400),
        ("A100-80GB", 80, 400),
        ("H100", 80, 700),
        ("H200", 141, 700),
        ("B200", 180, 1000),
        ("L4", 24, 72),
        ("L40S", 48, 350),
        ("A10", 24, 150),
        ("T4", 16, 70),
        ("V100", 16, 300),
        ("V100-32GB", 32, 300),
        ("P100", 16, 250),
        ("MI300X", 192, 750),
    ],
)
def test_datasheet_values(name: str, memory_gb: int, board_power_w: int) -> None:
    assert GPU_MODELS[name] == GpuModelSpec(name, memory_gb, board_power_w)


def test_hand_calculated_energy() -> None:
    # 8 x H100 for 10 h at half load in a PUE 1.2 hall: 700 W * 0.5 * 8 * 10 h * 1.2 = 33.6 kWh
    energy = gpu_energy_kwh(model="H100", gpus=8, hours=10, utilisation=0.5, pue=1.2)
    assert energy == pytest.approx(33.6)


def test_defaults_are_full_load_and_no_overhead() -> None:
    # one T4 for a day: 70 W * 24 h = 1.68 kWh
    assert gpu_energy_kwh(model="T4", gpus=1, hours=24) == pytest.approx(1.68)


def test_fractional_gpus_and_hours() -> None:
    # half an L4 for 90 minutes: 72 W * 0.5 * 1.5 h = 0.054 kWh
    assert gpu_energy_kwh(model="L4", gpus=0.5, hours=1.5) == pytest.approx(0.054)


def test_zero_work_is_zero_energy() -> None:
    assert gpu_energy_kwh(model="B200", gpus=0, hours=5) == 0.0
    assert gpu_energy_kwh(model="B200", gpus=4, hours=5, utilisation=0.0) == 0.0


def test_names_are_case_insensitive() -> None:
    assert gpu_model("a100-80gb") is GPU_MODELS["A100-80GB"]
    assert gpu_energy_kwh(model="mi300x", gpus=1, hours=1) == pytest.approx(0.75)


def test_unknown_model_is_a_key_error() -> None:
    with pytest.raises(UnknownGpuModel) as info:
        gpu_energy_kwh(model="RTX-9090", gpus=1, hours=1)
    assert isinstance(info.value, KeyError)
    assert info.value.model == "RTX-9090"
    assert "RTX-9090" in str(info.value)
    assert "H100" in str(info.value)
    with pytest.raises(KeyError):
        gpu_model("A100-40GB")  # not a canonical name: the 40 GB part is "A100"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": -1.0}, "gpus and hours"),
        ({"hours": -0.5}, "gpus and hours"),
        ({"hours": math.nan}, "gpus and hours"),
        ({"gpus": math.inf}, "gpus and hours"),
        ({"utilisation": 1.5}, "utilisation"),
        ({"utilisation": -0.1}, "utilisation"),
        ({"utilisation": math.nan}, "utilisation"),
        ({"pue": 0.9}, "pue"),
        ({"pue": math.inf}, "pue"),
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"gpus": 1.0, "hours": 1.0, "utilisation": 1.0, "pue": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        gpu_energy_kwh(model="A10G", **args)


def test_table_and_specs_are_immutable() -> None:
    with pytest.raises(TypeError):
        GPU_MODELS["X"] = GpuModelSpec("X", 1, 1)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        GPU_MODELS["H100"].board_power_w = 1  # type: ignore[misc]
