"""GPU board power and memory per model, and the energy a GPU job draws.

Power is the vendor's maximum board power (NVIDIA "Max TDP" / "max power consumption", AMD
"peak total board power"), so at utilisation 1.0 the estimate is an upper bound for the GPUs
themselves; host CPUs, memory, network and cooling come in only through `pue`. Where a
model ships in several form factors, the row is the one the big clouds rent (SXM boards for
A100/H100/H200/V100, PCIe for P100), and the comment says so.

Energy scales linearly with utilisation from zero: Cloud Carbon Footprint's min-to-max
interpolation with the minimum set to 0, because datasheets give no idle figure. It therefore
ignores idle draw and under-counts lightly loaded GPUs; pass utilisation=1.0 for a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "GPU_MODELS",
    "GpuModelSpec",
    "UnknownGpuModel",
    "gpu_energy_kwh",
    "gpu_model",
    "power_table",
]


@dataclass(frozen=True, slots=True)
class GpuModelSpec:
    """One GPU model: its canonical name, memory per GPU and maximum board power."""

    name: str
    memory_gb: int
    board_power_w: int


class UnknownGpuModel(KeyError):
    """The GPU model is not in GPU_MODELS (a KeyError, so mapping-style callers still work)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model

    def __str__(self) -> str:
        return f"unknown GPU model {self.model!r}; known: {', '.join(sorted(GPU_MODELS))}"


_SPECS = (
    # NVIDIA A100 Tensor Core GPU datasheet (2021, nvidia-a100-datasheet-us-nvidia-1758950):
    # A100 40GB SXM4 "Max TDP 400W" (PCIe 40GB: 250W). AWS p4d, GCP a2-highgpu use SXM4.
    GpuModelSpec("A100", memory_gb=40, board_power_w=400),
    # Same datasheet: A100 80GB SXM "Max TDP 400W" (PCIe 80GB: 300W). AWS p4de, GCP a2-ultragpu.
    GpuModelSpec("A100-80GB", memory_gb=80, board_power_w=400),
    # NVIDIA H100 Tensor Core GPU datasheet: H100 SXM 80GB "Max TDP up to 700W (configurable)"
    # (PCIe: 300-350W). AWS p5, GCP a3 use SXM5.
    GpuModelSpec("H100", memory_gb=80, board_power_w=700),
    # NVIDIA H200 Tensor Core GPU datasheet: H200 SXM 141GB "Max TDP up to 700W (configurable)".
    GpuModelSpec("H200", memory_gb=141, board_power_w=700),
    # NVIDIA HGX B200 / DGX B200 datasheet: 8 GPUs with 1,440GB total (180GB usable each),
    # "up to 1,000W" per GPU.
    GpuModelSpec("B200", memory_gb=180, board_power_w=1000),
    # NVIDIA L4 Tensor Core GPU datasheet: 24GB GDDR6, "Max thermal design power 72W".
    GpuModelSpec("L4", memory_gb=24, board_power_w=72),
    # NVIDIA L40S GPU datasheet: 48GB GDDR6, "Max power consumption 350W".
    GpuModelSpec("L40S", memory_gb=48, board_power_w=350),
    # A10G is an AWS-only part with no public NVIDIA datasheet; 24GB per AWS G5 instance docs,
    # 300W is the power limit nvidia-smi reports on G5 instances.
    GpuModelSpec("A10G", memory_gb=24, board_power_w=300),
    # NVIDIA A10 Tensor Core GPU datasheet: 24GB GDDR6, "Max thermal design power 150W".
    GpuModelSpec("A10", memory_gb=24, board_power_w=150),
    # NVIDIA T4 Tensor Core GPU datasheet: 16GB GDDR6, "Max power consumption 70W".
    GpuModelSpec("T4", memory_gb=16, board_power_w=70),
    # NVIDIA Tesla V100 datasheet: V100 SXM2 16GB "Max power consumption 300W" (PCIe: 250W).
    # AWS p3 uses SXM2.
    GpuModelSpec("V100", memory_gb=16, board_power_w=300),
    # Same datasheet, V100 SXM2 32GB: 300W. AWS p3dn.
    GpuModelSpec("V100-32GB", memory_gb=32, board_power_w=300),
    # NVIDIA Tesla P100 PCIe datasheet: 16GB CoWoS HBM2, "Max power consumption 250W"
    # (SXM2: 300W). GCP's nvidia-tesla-p100 is the PCIe 16GB card.
    GpuModelSpec("P100", memory_gb=16, board_power_w=250),
    # AMD Instinct MI300X accelerator data sheet: 192GB HBM3, "Peak total board power 750W".
    GpuModelSpec("MI300X", memory_gb=192, board_power_w=750),
)

GPU_MODELS: Mapping[str, GpuModelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
_BY_UPPER = {name.upper(): spec for name, spec in GPU_MODELS.items()}


def power_table(
    overrides: Mapping[str, GpuModelSpec] | None = None,
) -> Mapping[str, GpuModelSpec]:
    """GPU_MODELS with an operator's figures (the settings' `gpu_models`) added or replacing
    the datasheet rows of the same name; read-only. Pass it as `table=` to the lookups below.

    An override keeps the name it is given: the broker matches pools to rows by exact name.
    """
    if not overrides:
        return GPU_MODELS
    table = dict(GPU_MODELS)
    for name, spec in overrides.items():
        if spec.name != name:
            raise ValueError(f"override {name!r} carries the spec of {spec.name!r}")
        table[name] = spec
    return MappingProxyType(table)


def gpu_model(model: str, *, table: Mapping[str, GpuModelSpec] | None = None) -> GpuModelSpec:
    """Spec of a model by canonical name (case-insensitive) in `table` (default GPU_MODELS,
    else a `power_table`); raises UnknownGpuModel."""
    wanted = model.strip().upper()
    if table is None or table is GPU_MODELS:
        spec = _BY_UPPER.get(wanted)
    else:
        spec = table.get(model.strip()) or next(
            (s for name, s in table.items() if name.upper() == wanted), None
        )
    if spec is None:
        raise UnknownGpuModel(model)
    return spec


def gpu_energy_kwh(
    *,
    model: str,
    gpus: float,
    hours: float,
    utilisation: float = 1.0,
    pue: float = 1.0,
    table: Mapping[str, GpuModelSpec] | None = None,
) -> float:
    """Energy in kWh: board power x utilisation x GPU count x hours x PUE.

    Raises UnknownGpuModel for a model not in `table` (default GPU_MODELS) and ValueError
    for a negative or non-finite count or duration, a utilisation outside [0, 1], or a PUE
    below 1.
    """
    spec = gpu_model(model, table=table)
    # Written as "not (ok)" so that NaN, which fails every comparison, is rejected too.
    if not (0.0 <= gpus < math.inf and 0.0 <= hours < math.inf):
        raise ValueError(f"gpus and hours must be finite and >= 0, got {gpus}, {hours}")
    if not 0.0 <= utilisation <= 1.0:
        raise ValueError(f"utilisation must be within [0, 1], got {utilisation}")
    if not 1.0 <= pue < math.inf:
        raise ValueError(f"pue must be finite and >= 1, got {pue}")
    return spec.board_power_w * utilisation * gpus * hours * pue / 1000.0
