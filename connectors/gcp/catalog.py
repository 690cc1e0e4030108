"""What GPU machines a GCP region offers, and at what price.

GPUs come to a Compute Engine VM in two ways
(https://cloud.google.com/compute/docs/gpus):

* bundled with an accelerator-optimized machine type (A2 `a2-highgpu-*`/`a2-ultragpu-*`, A3
  `a3-highgpu-8g`, G2 `g2-standard-*`, ...): `machineTypes.list` names the GPUs in the type's
  `accelerators` field;
* attached to an N1 machine (`guestAccelerators`): T4, V100 and P100, listed per zone by
  `acceleratorTypes.list` with `maximumCardsPerInstance`. One N1 host shape is used per GPU
  count (`N1_HOSTS`) so that each (GPU, count) is one pool, not one per N1 size.

Each such shape is an `Offering`, and one offering is one inventory pool. Prices come from a
CSV catalog (see `data/README.md`): on GCP the price of a GPU VM is the host VM's price plus
the accelerators' price, and the catalog stores that sum per instance-hour; pools show it per
GPU-hour. A shape with no price in the region is left out of the inventory: the broker cannot
weigh what it cannot price.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

from broker.domain.fleet import GpuPool
from carbon.power import gpu_model

DEFAULT_PRICES = Path(__file__).resolve().parent / "data" / "prices.csv"
log = logging.getLogger(__name__)

# GCP accelerator type name -> canonical GPU model (carbon.power.GPU_MODELS). Types not here
# (virtual-workstation variants, P4, TPUs) are ignored.
ACCELERATOR_MODELS: Mapping[str, str] = MappingProxyType(
    {
        "nvidia-tesla-a100": "A100",
        "nvidia-a100-80gb": "A100-80GB",
        "nvidia-h100-80gb": "H100",
        "nvidia-h100-mega-80gb": "H100",  # A3 Mega: the same H100 SXM with more networking
        "nvidia-h200-141gb": "H200",
        "nvidia-b200": "B200",
        "nvidia-l4": "L4",
        "nvidia-tesla-t4": "T4",
        "nvidia-tesla-v100": "V100",
        "nvidia-tesla-p100": "P100",
    }
)

# Accelerators attached to N1 VMs, and the N1 host per GPU count. Each host stays within the
# vCPU limits of every listed GPU at that count (V100: 12 vCPUs per GPU; T4: 48 for one).
ATTACHABLE = frozenset({"nvidia-tesla-t4", "nvidia-tesla-v100", "nvidia-tesla-p100"})
N1_HOSTS: Mapping[int, str] = MappingProxyType(
    {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineTypeInfo:
    """One entry of a zone's machineTypes.list."""

    name: str
    cpus: int
    memory_gb: float
    accelerator_type: str | None = None  # bundled GPUs, from `accelerators`
    accelerator_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceleratorInfo:
    """One entry of a zone's acceleratorTypes.list."""

    name: str
    max_per_instance: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneTypes:
    zone: str
    machine_types: tuple[MachineTypeInfo, ...]
    accelerators: tuple[AcceleratorInfo, ...]


@dataclass(frozen=True, slots=True)
class Price:
    on_demand: float  # USD per instance-hour
    spot: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Offering:
    """A GPU machine shape offered in some zones of the region: one inventory pool."""

    key: str  # "a2-highgpu-1g" or "n1-standard-8-nvidia-tesla-t4x1"
    machine_type: str
    accelerator_type: str
    gpus: int
    attached: bool  # GPUs go in guestAccelerators (N1) rather than with the machine type
    gpu_model: str
    cpus: int
    memory_gb: float
    zones: tuple[str, ...]
    price: Price

    def gpu_hour(self, *, spot: bool) -> float:
        """Price per GPU-hour; spot falls back to on-demand where the catalog has no spot."""
        hourly = self.price.spot if spot and self.price.spot is not None else self.price.on_demand
        return hourly / self.gpus


class PriceCatalog:
    """Instance-hour prices keyed by (region, machine type, accelerator type, count)."""

    COLUMNS = (
        "region",
        "machine_type",
        "accelerator_type",
        "accelerator_count",
        "on_demand_usd_hr",
        "spot_usd_hr",
    )

    def __init__(self, rows: Mapping[tuple[str, str, str, int], Price]) -> None:
        self._rows = dict(rows)

    @classmethod
    def load(cls, path: Path | None = None) -> PriceCatalog:
        path = path or DEFAULT_PRICES
        rows: dict[tuple[str, str, str, int], Price] = {}
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != cls.COLUMNS:
                raise ValueError(f"{path}: expected columns {', '.join(cls.COLUMNS)}")
            for row in reader:
                key = (
                    row["region"],
                    row["machine_type"],
                    row["accelerator_type"],
                    int(row["accelerator_count"]),
                )
                spot = row["spot_usd_hr"]
                rows[key] = Price(float(row["on_demand_usd_hr"]), float(spot) if spot else None)
        return cls(rows)

    def price(
        self, *, region: str, machine_type: str, accelerator_type: str, count: int
    ) -> Price | None:
        return self._rows.get((region, machine_type, accelerator_type, count))

    def __len__(self) -> int:
        return len(self._rows)


def allowed(allow: Sequence[str] | None, *names: str) -> bool:
    """Whether any of `names` matches the allow-list (None allows everything)."""
    if allow is None:
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in allow for name in names)


def offerings(
    *,
    region: str,
    zones: Iterable[ZoneTypes],
    prices: PriceCatalog,
    allow: Sequence[str] | None,
) -> list[Offering]:
    """The priced, allowed GPU shapes of the region, with the zones (in order) that offer each."""
    shapes: dict[str, tuple[MachineTypeInfo, str, int, bool]] = {}
    where: dict[str, list[str]] = {}
    for zone in zones:
        by_name = {m.name: m for m in zone.machine_types}
        found: list[tuple[MachineTypeInfo, str, int, bool]] = []
        for m in zone.machine_types:
            bundled = m.accelerator_type
            if bundled is not None and bundled in ACCELERATOR_MODELS and m.accelerator_count:
                found.append((m, bundled, m.accelerator_count, False))
            elif bundled is not None and m.accelerator_count:
                _warn_unmapped(bundled, m.name)
        for acc in zone.accelerators:
            if acc.name not in ATTACHABLE:
                continue
            for count, host in N1_HOSTS.items():
                if count <= acc.max_per_instance and host in by_name:
                    found.append((by_name[host], acc.name, count, True))
        for machine, accel, count, attached in found:
            key = f"{machine.name}-{accel}x{count}" if attached else machine.name
            shapes.setdefault(key, (machine, accel, count, attached))
            where.setdefault(key, []).append(zone.zone)
    result = []
    for key, (machine, accel, count, attached) in sorted(shapes.items()):
        if not allowed(allow, machine.name, key):
            continue
        price = prices.price(
            region=region, machine_type=machine.name, accelerator_type=accel, count=count
        )
        if price is None:
            continue
        result.append(
            Offering(
                key=key,
                machine_type=machine.name,
                accelerator_type=accel,
                gpus=count,
                attached=attached,
                gpu_model=ACCELERATOR_MODELS[accel],
                cpus=machine.cpus,
                memory_gb=machine.memory_gb,
                zones=tuple(where[key]),
                price=price,
            )
        )
    return result


# Once per type and process: the catalog is listed again every `catalog_ttl_s`.
@functools.cache
def _warn_unmapped(accelerator: str, machine_type: str) -> None:
    """A GPU machine type left out because its accelerator has no canonical model (and so no
    power figure): say so, instead of a region that silently offers less."""
    log.warning(
        "GCP machine type %s carries accelerator %r, which maps to no known GPU model; it is "
        "not offered. Add it to connectors/gcp/catalog.py ACCELERATOR_MODELS, and if the "
        "model is new give its figures in the settings' `gpu_models`",
        machine_type,
        accelerator,
    )


def cheapest(offers: Iterable[Offering], *, gpu_model_name: str, spot: bool) -> list[Offering]:
    """Offerings with that GPU model, cheapest per GPU-hour first, then fewer GPUs, then key.

    Prices are compared to a hundredth of a cent: GCP prices a machine with N GPUs at N
    times the one-GPU price give or take rounding, and such a tie should go to the smaller
    machine, which wastes less when fewer GPUs are needed.
    """
    wanted = gpu_model_name.strip().upper()
    matching = [o for o in offers if o.gpu_model.upper() == wanted]
    return sorted(matching, key=lambda o: (round(o.gpu_hour(spot=spot), 4), o.gpus, o.key))


def pool(offer: Offering, *, site: str, nodes: int, now: datetime) -> GpuPool:
    """The inventory pool of one offering; prices per GPU-hour."""
    return GpuPool(
        id=f"{site}/{offer.key}",
        site=site,
        gpu_model=offer.gpu_model,
        gpu_memory_gb=float(gpu_model(offer.gpu_model).memory_gb),
        gpus_per_node=offer.gpus,
        nodes=nodes,
        price_on_demand=round(offer.gpu_hour(spot=False), 6),
        price_spot=None if offer.price.spot is None else round(offer.price.spot / offer.gpus, 6),
        cpu_per_node=float(offer.cpus),
        memory_gb_per_node=offer.memory_gb,
        updated_at=now,
        extra={
            "machine_type": offer.machine_type,
            "accelerator_type": offer.accelerator_type,
            "accelerator_count": str(offer.gpus),
            "attached": "true" if offer.attached else "false",
            "zones": ",".join(offer.zones),
        },
    )
