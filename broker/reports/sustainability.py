"""The sustainability report: energy, emissions, avoided emissions and cost of the runs that
ended in a period, grouped by tenant, site, tier, day or service, as JSON, CSV or an HTML page.

Terms follow the Green Software Foundation's Software Carbon Intensity specification where
they fit: energy E (kWh) and location-based grid intensity I (gCO2e/kWh) give operational
emissions O = E x I; the functional unit R is one job, so `gco2_per_job` is the SCI score
without embodied emissions (M, not counted). Avoided emissions compare each run with a
carbon-blind choice (the broker's ranking without carbon, started at submission; see
`broker/scheduling/footprints.py`); a run that emitted more than that choice counts under
`added_kgco2e`, so neither figure is ever negative and one cannot hide the other.

Every report states its accounting basis (`carbon.basis`: operational or lifecycle; see
docs/carbon.md): the intensities it rests on are all of that basis, and figures of two
bases are not comparable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from broker.domain.footprint import RunFootprint

METHOD = (
    "Operational emissions per run = energy (GPU board power x utilisation x GPUs + a CPU and "
    "memory share, x run time x site PUE) x the time-weighted mean location-based grid "
    "intensity of the site's zone over the run. SCI terms: E, I, O = E x I, functional unit "
    "R = one job; embodied emissions M are not included. Avoided = carbon-blind "
    "counterfactual (broker ranking without the carbon weight, capacity ignored, started at "
    "submission, same run time) minus actual, counted only where positive; the reverse is "
    "reported as added."
)


class GroupBy(StrEnum):
    TENANT = "tenant"
    SITE = "site"
    TIER = "tier"
    DAY = "day"
    SERVICE = "service"  # inference services; other work under "(jobs)"


_KEYS: dict[GroupBy, Callable[[RunFootprint], str]] = {
    GroupBy.TENANT: lambda r: r.tenant,
    GroupBy.SITE: lambda r: r.site,
    GroupBy.TIER: lambda r: r.tier.value,
    GroupBy.DAY: lambda r: r.ended_at.date().isoformat(),
    GroupBy.SERVICE: lambda r: r.service_id or "(jobs)",
}


@dataclass(slots=True)
class Totals:
    runs: int = 0
    energy_kwh: float = 0.0
    kgco2e: float = 0.0
    avoided_kgco2e: float = 0.0
    added_kgco2e: float = 0.0
    baseline_kgco2e: float = 0.0
    cost_usd: float = 0.0
    gpu_hours: float = 0.0
    run_hours: float = 0.0  # for a service: its replica-hours
    unmeasured_runs: int = 0  # no intensity known: energy counted, emissions not
    estimated_runs: int = 0  # intensity partly filled in, estimated or stale
    _counted_kwh: float = field(default=0.0, repr=False)  # energy with a known intensity

    def add(self, r: RunFootprint) -> None:
        self.runs += 1
        self.energy_kwh += r.energy_kwh
        self.cost_usd += r.cost_usd
        self.gpu_hours += r.gpu_hours
        self.run_hours += (r.ended_at - r.started_at).total_seconds() / 3600
        if r.gco2 is None:
            self.unmeasured_runs += 1
            return
        self._counted_kwh += r.energy_kwh
        self.kgco2e += r.gco2 / 1000
        self.avoided_kgco2e += r.avoided_gco2 / 1000
        self.added_kgco2e += r.added_gco2 / 1000
        if r.baseline_gco2 is not None:
            self.baseline_kgco2e += r.baseline_gco2 / 1000
        if r.intensity_estimated:
            self.estimated_runs += 1

    @property
    def intensity_gco2_per_kwh(self) -> float | None:
        """Energy-weighted mean intensity of the runs with a known one."""
        return 1000 * self.kgco2e / self._counted_kwh if self._counted_kwh > 0 else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "runs": self.runs,
            "energy_kwh": round(self.energy_kwh, 6),
            "kgco2e": round(self.kgco2e, 6),
            "avoided_kgco2e": round(self.avoided_kgco2e, 6),
            "added_kgco2e": round(self.added_kgco2e, 6),
            "baseline_kgco2e": round(self.baseline_kgco2e, 6),
            "cost_usd": round(self.cost_usd, 4),
            "gpu_hours": round(self.gpu_hours, 4),
            "run_hours": round(self.run_hours, 6),
            "intensity_gco2_per_kwh": (
                None
                if self.intensity_gco2_per_kwh is None
                else round(self.intensity_gco2_per_kwh, 3)
            ),
            "gco2_per_job": round(1000 * self.kgco2e / self.runs, 3) if self.runs else None,
            "unmeasured_runs": self.unmeasured_runs,
            "estimated_runs": self.estimated_runs,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    start: datetime
    end: datetime
    group_by: GroupBy
    groups: dict[str, Totals]
    total: Totals
    runs: tuple[RunFootprint, ...]
    basis: str  # the deployment's carbon accounting basis: operational or lifecycle

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": self.group_by.value,
            "basis": self.basis,
            "method": METHOD,
            "total": self.total.as_dict(),
            "groups": [{"key": k, **t.as_dict()} for k, t in self.groups.items()],
        }


def build(
    runs: Iterable[RunFootprint],
    *,
    start: datetime,
    end: datetime,
    group_by: GroupBy,
    basis: str,
) -> Report:
    key = _KEYS[group_by]
    groups: dict[str, Totals] = {}
    total = Totals()
    kept = tuple(runs)
    for r in kept:
        groups.setdefault(key(r), Totals()).add(r)
        total.add(r)
    return Report(
        start=start,
        end=end,
        group_by=group_by,
        groups=dict(sorted(groups.items())),
        total=total,
        runs=kept,
        basis=basis,
    )


CSV_COLUMNS: Sequence[str] = (
    "key",
    "runs",
    "energy_kwh",
    "kgco2e",
    "avoided_kgco2e",
    "added_kgco2e",
    "baseline_kgco2e",
    "cost_usd",
    "gpu_hours",
    "run_hours",
    "intensity_gco2_per_kwh",
    "gco2_per_job",
    "unmeasured_runs",
    "estimated_runs",
    "basis",
)


def to_csv(report: Report) -> str:
    """One row per group, then a `total` row; a header even when the period is empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for k, t in report.groups.items():
        writer.writerow({"key": k, **t.as_dict(), "basis": report.basis})
    writer.writerow({"key": "total", **report.total.as_dict(), "basis": report.basis})
    return out.getvalue()
