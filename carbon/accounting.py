"""Per-job energy and emissions, and the carbon-blind counterfactual they are compared with.

Terms follow the Green Software Foundation's Software Carbon Intensity (SCI) specification
where they fit: E is the energy a job consumed (kWh), I the location-based grid intensity
(gCO2e/kWh) over the time it ran, and the operational emissions O = E x I; the functional
unit R is one job. Embodied emissions (M) are not counted.

Energy: Σ over the job's GPUs of the model's board power (`carbon.power.GPU_MODELS`) x a
utilisation factor, plus a host share for its CPUs and memory, x run time x the site's PUE.
The host coefficients are Cloud Carbon Footprint's (github.com/cloud-carbon-footprint,
Apache-2.0): 0.74-3.5 W per vCPU (AWS min/max average), taken at 50 % load = 2.12 W, and
0.392 W per GB of memory.

Intensity: the time-weighted mean of the hourly readings overlapping the run window, each
reading holding for its hour. Power is taken as constant over the run, so O = E x mean(I),
the same as integrating power against intensity. Hours no reading covers are filled with
the nearest reading's value and the result is marked estimated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from carbon.base import IntensityReading
from carbon.power import gpu_energy_kwh

HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyModel:
    gpu_utilisation: float = 0.8
    cpu_w_per_vcpu: float = 2.12  # CCF: AWS 0.74 W idle .. 3.5 W max, at 50 % load
    memory_w_per_gb: float = 0.392  # CCF


@dataclass(frozen=True, slots=True, kw_only=True)
class Energy:
    gpu_kwh: float
    host_kwh: float  # the job's CPU and memory share

    @property
    def total_kwh(self) -> float:
        return self.gpu_kwh + self.host_kwh


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowIntensity:
    """Mean intensity over a run window and what it rests on."""

    gco2_per_kwh: float
    sources: tuple[str, ...]
    estimated: bool  # some hours were filled in, or a reading was estimated or stale
    forecast: bool  # some hours rest on a forecast rather than a measurement


def job_energy(
    *,
    gpu_model: str,
    gpus: float,
    cpus: float,
    memory_gb: float,
    seconds: float,
    pue: float,
    model: EnergyModel = EnergyModel(),
) -> Energy:
    """Energy of one job's run; raises UnknownGpuModel/ValueError like `gpu_energy_kwh`."""
    hours = max(0.0, seconds) / 3600
    gpu = gpu_energy_kwh(
        model=gpu_model, gpus=gpus, hours=hours, utilisation=model.gpu_utilisation, pue=pue
    )
    host_w = cpus * model.cpu_w_per_vcpu + memory_gb * model.memory_w_per_gb
    return Energy(gpu_kwh=gpu, host_kwh=host_w * hours * pue / 1000)


def window_intensity(
    readings: Sequence[IntensityReading], *, start: datetime, end: datetime
) -> WindowIntensity | None:
    """Time-weighted mean over [start, end) of hourly readings; None without any reading."""
    if not readings:
        return None
    ordered = sorted(readings, key=lambda r: r.at)
    if end <= start:
        nearest = min(ordered, key=lambda r: abs((r.at - start).total_seconds()))
        return WindowIntensity(
            gco2_per_kwh=nearest.gco2_per_kwh,
            sources=(nearest.source,),
            estimated=nearest.estimated or nearest.stale,
            forecast=nearest.forecast,
        )
    total = covered = 0.0
    used: list[IntensityReading] = []
    for r in ordered:
        lo, hi = max(start, r.at), min(end, r.at + HOUR)
        seconds = (hi - lo).total_seconds()
        if seconds > 0 and math.isfinite(r.gco2_per_kwh):
            total += r.gco2_per_kwh * seconds
            covered += seconds
            used.append(r)
    span = (end - start).total_seconds()
    filled = covered < span - 1e-6
    if filled:  # the uncovered part at the nearest reading's value
        pick = used or [min(ordered, key=lambda r: abs((r.at - start).total_seconds()))]
        total += pick[-1].gco2_per_kwh * (span - covered)
        used = used or pick
    return WindowIntensity(
        gco2_per_kwh=total / span,
        sources=tuple(sorted({r.source for r in used})),
        estimated=filled or any(r.estimated or r.stale for r in used),
        forecast=any(r.forecast for r in used),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Footprint:
    """One job's operational emissions and its carbon-blind counterfactual.

    `avoided_g` and `added_g` split the difference so that each is never negative: a job the
    broker ran dirtier than the carbon-blind choice would have adds emissions, and reports
    show both rather than letting one job's saving hide another's cost.
    """

    energy: Energy
    intensity: WindowIntensity
    gco2: float
    baseline_gco2: float | None  # None when the counterfactual could not be formed

    @property
    def avoided_g(self) -> float:
        if self.baseline_gco2 is None:
            return 0.0
        return max(0.0, self.baseline_gco2 - self.gco2)

    @property
    def added_g(self) -> float:
        if self.baseline_gco2 is None:
            return 0.0
        return max(0.0, self.gco2 - self.baseline_gco2)


def footprint(
    *,
    energy: Energy,
    intensity: WindowIntensity,
    baseline_energy: Energy | None,
    baseline_intensity: WindowIntensity | None,
) -> Footprint:
    baseline = None
    if baseline_energy is not None and baseline_intensity is not None:
        baseline = baseline_energy.total_kwh * baseline_intensity.gco2_per_kwh
    return Footprint(
        energy=energy,
        intensity=intensity,
        gco2=energy.total_kwh * intensity.gco2_per_kwh,
        baseline_gco2=baseline,
    )
