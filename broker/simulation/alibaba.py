"""Alibaba GPU model names, mapped to the broker's (`carbon.power.GPU_MODELS`).

Shared by the fleet builder (node lists) and the openb pod-list converter (`gpu_spec`), so a
pod's model constraint names exactly the pools its nodes became. The node lists are
described in the shared data folder's traces README; nothing derived from them is
committed.

Three kinds of name:

* **Disclosed, in the power table**: mapped one to one (`V100M16` is the 16 GB V100,
  `V100M32` the 32 GB one; the spot list's `A100-SXM4-80GB` is the broker's `A100-80GB`).
* **Disclosed, not in the power table**: the export variants H800 and A800 are mapped to
  the part they are cut down from. NVIDIA's H800 is an H100 SXM5 board (80 GB, 700 W max
  board power) with lower NVLink bandwidth; the A800 SXM4 80GB is an A100 SXM4 80GB (400 W)
  likewise. Power and memory are the same, so energy figures are unchanged; only
  interconnect-bound speed differs, which the replay does not model.
* **Undisclosed** (openb `G1`/`G2`/`G3`, spot `GPU-series-1`/`-2`): no power figure exists.
  The fleet keeps the name and carries a `gpu_models:` override with the ASSUMED figures
  below, or, with `undisclosed_as`, maps them to a stated known model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from carbon.power import GPU_MODELS

__all__ = [
    "KNOWN_NAMES",
    "UNDISCLOSED",
    "AssumedModel",
    "UnknownAlibabaModel",
    "broker_model",
]

# Alibaba's name → the broker's canonical name (every value is a key of GPU_MODELS).
KNOWN_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "P100": "P100",
        "T4": "T4",
        "V100M16": "V100",
        "V100M32": "V100-32GB",
        "A10": "A10",
        "A100-SXM4-80GB": "A100-80GB",
        "H800": "H100",  # H100 SXM5 board, 700 W, 80 GB; less NVLink bandwidth
        "A800-SXM4-80GB": "A100-80GB",  # A100 SXM4 80GB board, 400 W; less NVLink bandwidth
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssumedModel:
    """Power and memory ASSUMED for an undisclosed model, and why."""

    board_power_w: int
    memory_gb: int
    reason: str


# The undisclosed models keep their names (prefixed so they cannot clash with a real part);
# the figures are assumptions, written into every fleet file that uses them.
UNDISCLOSED: Mapping[str, AssumedModel] = MappingProxyType(
    {
        # openb G1/G2/G3: 2019-2022 internal training parts in 8-GPU nodes next to V100s;
        # assumed V100-32GB-class (300 W, 32 GB), the largest disclosed part of that cluster.
        "G1": AssumedModel(board_power_w=300, memory_gb=32, reason="assumed V100-32GB-class"),
        "G2": AssumedModel(board_power_w=300, memory_gb=32, reason="assumed V100-32GB-class"),
        "G3": AssumedModel(board_power_w=300, memory_gb=32, reason="assumed V100-32GB-class"),
        # Spot cluster (2025) series: next to A100/A800/H800 nodes; assumed A100-80GB-class
        # (400 W, 80 GB).
        "GPU-series-1": AssumedModel(
            board_power_w=400, memory_gb=80, reason="assumed A100-80GB-class"
        ),
        "GPU-series-2": AssumedModel(
            board_power_w=400, memory_gb=80, reason="assumed A100-80GB-class"
        ),
    }
)
UNDISCLOSED_PREFIX = "alibaba-"  # G2 becomes the fleet model `alibaba-G2`


class UnknownAlibabaModel(ValueError):
    """A node list or pod names a GPU model this module has no mapping for."""


def broker_model(name: str, *, undisclosed_as: str | None = None) -> str:
    """The broker's model name for an Alibaba one.

    Undisclosed models become `alibaba-<name>` (which needs a `gpu_models:` override), or
    `undisclosed_as` when given (a key of GPU_MODELS). Unknown names raise.
    """
    name = name.strip()
    if name in KNOWN_NAMES:
        return KNOWN_NAMES[name]
    if name in UNDISCLOSED:
        if undisclosed_as is not None:
            if undisclosed_as not in GPU_MODELS:
                raise UnknownAlibabaModel(
                    f"--undisclosed-as {undisclosed_as!r} is not a known GPU model; "
                    f"known: {', '.join(sorted(GPU_MODELS))}"
                )
            return undisclosed_as
        return UNDISCLOSED_PREFIX + name
    known = ", ".join(sorted((*KNOWN_NAMES, *UNDISCLOSED)))
    raise UnknownAlibabaModel(f"unknown Alibaba GPU model {name!r}; known: {known}")


def assumed(model: str) -> AssumedModel | None:
    """The assumed figures of a fleet model name made by `broker_model`, else None."""
    if model.startswith(UNDISCLOSED_PREFIX):
        return UNDISCLOSED.get(model[len(UNDISCLOSED_PREFIX) :])
    return None
