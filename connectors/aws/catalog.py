"""Prices and offers: which GPU instance types a region site can launch, where, at what price.

EC2 has no price API of its own (the Price List API is a separate, bulky service), so
on-demand prices come from a CSV shipped with the package (`data/prices.csv`, see its README).
Spot prices come from `DescribeSpotPriceHistory` when the account may call it, the cheapest
zone the site would use; otherwise from the same CSV. A type the CSV lacks for this region
takes its highest price in any other region, so a missing row never makes a type look cheap;
a type with no row anywhere is left out (the broker would place work at an unknown cost).

Pool prices are per GPU-hour: the instance price divided by its GPUs.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from broker.domain.errors import ConfigError
from broker.domain.fleet import GpuPool
from connectors.aws.mapping import GpuType

PRICE_COLUMNS = (
    "instance_type",
    "region",
    "gpu_model",
    "gpus",
    "on_demand_usd_h",
    "spot_usd_h",
    "snapshot_date",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """One catalog row: an instance type's list prices in one region, USD per instance-hour."""

    instance_type: str
    region: str
    gpu_model: str
    gpus: int
    on_demand: float
    spot: float | None
    snapshot: str


class PriceCatalog:
    """Instance-type prices by region, with the fallback rule of the module docstring."""

    def __init__(self, rows: Iterable[Price]) -> None:
        self._rows = {(p.instance_type, p.region): p for p in rows}
        self._highest: dict[str, Price] = {}
        for p in self._rows.values():
            best = self._highest.get(p.instance_type)
            if best is None or p.on_demand > best.on_demand:
                self._highest[p.instance_type] = p

    @classmethod
    def load(cls, path: Path) -> PriceCatalog:
        """Read a price CSV; raises `ConfigError` for a missing file or a malformed row."""
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != PRICE_COLUMNS:
                    raise ConfigError(f"price catalog {path}: header must be {PRICE_COLUMNS}")
                return cls(_row(r, path=path, line=reader.line_num) for r in reader)
        except OSError as exc:
            raise ConfigError(f"cannot read price catalog {path}: {exc.strerror}") from exc

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, instance_type: str, region: str) -> tuple[Price, bool] | None:
        """(price, exact) for the type in `region`, else its highest-priced region; None when
        the catalog has no row for the type at all."""
        exact = self._rows.get((instance_type, region))
        if exact is not None:
            return exact, True
        other = self._highest.get(instance_type)
        return None if other is None else (other, False)

    def in_region(self, region: str) -> list[Price]:
        return [p for (_, r), p in self._rows.items() if r == region]


def _row(raw: Mapping[str, str], *, path: Path, line: int) -> Price:
    try:
        spot = raw["spot_usd_h"].strip()
        return Price(
            instance_type=raw["instance_type"],
            region=raw["region"],
            gpu_model=raw["gpu_model"],
            gpus=int(raw["gpus"]),
            on_demand=float(raw["on_demand_usd_h"]),
            spot=float(spot) if spot else None,
            snapshot=raw["snapshot_date"],
        )
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"price catalog {path}, line {line}: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """A GPU instance type this site can launch: its zones (in try order) and its prices."""

    gpu: GpuType
    zones: tuple[str, ...]
    on_demand: float  # USD per instance-hour
    spot: float | None
    price_source: str  # "catalog <date>" or "catalog <region> <date>" for the fallback
    spot_source: str  # "spot-price-history", "catalog" or "none"

    def price_per_gpu(self, *, spot: bool) -> float | None:
        price = self.spot if spot else self.on_demand
        return None if price is None else price / self.gpu.gpus


def zone_order(
    offered: Iterable[str], *, preferred: Sequence[str], subnets: Mapping[str, str]
) -> tuple[str, ...]:
    """Zones to try: the configured order (else by name), only zones with a subnet if any."""
    offered = set(offered)
    ordered = [z for z in preferred if z in offered] if preferred else sorted(offered)
    return tuple(z for z in ordered if not subnets or z in subnets)


def offers(
    *,
    types: Mapping[str, GpuType],
    zones: Mapping[str, Sequence[str]],
    prices: PriceCatalog,
    region: str,
    spot: Mapping[str, Mapping[str, float]],
    preferred_zones: Sequence[str],
    subnets: Mapping[str, str],
) -> list[Offer]:
    """Every GPU type offered in a usable zone and priced, cheapest per GPU-hour first."""
    found: list[Offer] = []
    for name, gpu in types.items():
        usable = zone_order(zones.get(name, ()), preferred=preferred_zones, subnets=subnets)
        priced = prices.lookup(name, region)
        if not usable or priced is None:
            continue
        price, exact = priced
        live = [spot[name][z] for z in usable if z in spot.get(name, {})]
        if live:
            spot_price, spot_source = min(live), "spot-price-history"
        elif exact and price.spot is not None:
            spot_price, spot_source = price.spot, "catalog"
        else:  # another region's spot market says nothing about this one
            spot_price, spot_source = None, "none"
        where = "" if exact else f" {price.region}"
        found.append(
            Offer(
                gpu=gpu,
                zones=usable,
                on_demand=price.on_demand,
                spot=spot_price,
                price_source=f"catalog{where} {price.snapshot}",
                spot_source=spot_source,
            )
        )
    found.sort(key=lambda o: (o.on_demand / o.gpu.gpus, o.gpu.instance_type))
    return found


def cheapest(candidates: Iterable[Offer], *, gpu_model: str, spot: bool) -> Offer | None:
    """The offer with `gpu_model` at the lowest price per GPU-hour in the asked market
    (ties: fewer GPUs per instance, then name); None when no offer has the model."""
    ranked = [
        (price, o.gpu.gpus, o.gpu.instance_type, o)
        for o in candidates
        if o.gpu.gpu_model == gpu_model and (price := o.price_per_gpu(spot=spot)) is not None
    ]
    return min(ranked, key=lambda r: r[:3])[3] if ranked else None


def pool_id(site: str, instance_type: str) -> str:
    return f"{site}/{instance_type}"


def pool(offer: Offer, *, site: str, nodes: int, now: datetime) -> GpuPool:
    gpu = offer.gpu
    spot = offer.price_per_gpu(spot=True)
    return GpuPool(
        id=pool_id(site, gpu.instance_type),
        site=site,
        gpu_model=gpu.gpu_model,
        gpu_memory_gb=gpu.gpu_memory_gb,
        gpus_per_node=gpu.gpus,
        nodes=nodes,
        price_on_demand=offer.on_demand / gpu.gpus,
        price_spot=spot,
        cpu_per_node=float(gpu.vcpus),
        memory_gb_per_node=gpu.memory_gb,
        updated_at=now,
        extra={
            "instance_type": gpu.instance_type,
            "zones": ",".join(offer.zones),
            "price_source": offer.price_source,
            "spot_source": offer.spot_source,
        },
    )
