"""GPU Feature Discovery product labels → the broker's canonical GPU model names.

GPU Feature Discovery (part of the NVIDIA GPU operator) labels each GPU node with
`nvidia.com/gpu.product`: the name `nvidia-smi` reports with spaces turned into dashes
("NVIDIA H100 80GB HBM3" → "NVIDIA-H100-80GB-HBM3"). With time-slicing and
`renameByDefault: false` it appends "-SHARED"; with the MIG "single" strategy it appends
"-MIG-<profile>". The canonical names are the keys of `carbon.power.GPU_MODELS`, which the
energy model and the price catalogs share; a product missing from the table keeps a slug of
its label so it still forms its own pool.
See https://github.com/NVIDIA/k8s-device-plugin (gpu-feature-discovery labels).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from types import MappingProxyType

from carbon.power import GPU_MODELS

log = logging.getLogger(__name__)

# Product label (case-insensitive, suffixes stripped) → canonical model.
PRODUCT_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "NVIDIA-A100-SXM4-40GB": "A100",
        "NVIDIA-A100-PCIE-40GB": "A100",
        "NVIDIA-A100-SXM4-80GB": "A100-80GB",
        "NVIDIA-A100-80GB-PCIE": "A100-80GB",
        "NVIDIA-H100-80GB-HBM3": "H100",
        "NVIDIA-H100-SXM5-80GB": "H100",
        "NVIDIA-H100-PCIE": "H100",
        "NVIDIA-H200": "H200",
        "NVIDIA-H200-SXM5-141GB": "H200",
        "NVIDIA-B200": "B200",
        "NVIDIA-L4": "L4",
        "NVIDIA-L40S": "L40S",
        "NVIDIA-A10G": "A10G",
        "NVIDIA-A10": "A10",
        "TESLA-T4": "T4",
        "TESLA-V100-SXM2-16GB": "V100",
        "TESLA-V100-PCIE-16GB": "V100",
        "TESLA-V100-SXM2-32GB": "V100-32GB",
        "TESLA-P100-PCIE-16GB": "P100",
    }
)

_SUFFIXES = re.compile(r"(-SHARED|-MIG-.*)$", re.IGNORECASE)
_VENDOR = re.compile(r"^(NVIDIA|TESLA)-", re.IGNORECASE)
_NOT_SLUG = re.compile(r"[^A-Z0-9.]+")


def canonical_model(product: str) -> str:
    """The canonical model for a product label; unknown products keep a slug of the label."""
    base = _SUFFIXES.sub("", product.strip()).upper()
    known = PRODUCT_MODELS.get(base)
    if known is not None:
        return known
    slug = _VENDOR.sub("", _NOT_SLUG.sub("-", base).strip("-")) or "UNKNOWN"
    _warn_unknown(product.strip(), slug)
    return slug


# Once per label and process: inventory is read every minute and would repeat it forever.
@functools.cache
def _warn_unknown(product: str, model: str) -> None:
    """A node's GPU has no power figure: its pool draws no energy in the broker's estimates
    unless the operator supplies one, so say which setting does."""
    if model in GPU_MODELS:
        return
    log.warning(
        "GPU product %r (nvidia.com/gpu.product) is not a known model; its pool is %r, "
        "which has no board power figure: add `gpu_models: {%s: {board_power_w: <W>, "
        "memory_gb: <GB>}}` to the broker's settings",
        product,
        model,
        model,
    )


def nominal_memory_gb(model: str, memory_mib: int | None) -> float:
    """The model's nominal memory ("H100" → 80), else the label's MiB in GiB, else 0.

    GPU Feature Discovery reports usable memory (81559 MiB on an H100 80GB); jobs ask for
    the nominal size, so a known model reports its datasheet figure.
    """
    spec = GPU_MODELS.get(model)
    if spec is not None:
        return float(spec.memory_gb)
    if memory_mib:
        return round(memory_mib / 1024, 1)
    return 0.0
