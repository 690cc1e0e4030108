"""Per-job energy and emissions against hand calculations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbon.accounting import Energy, EnergyModel, footprint, job_energy, window_intensity
from carbon.base import IntensityReading

T10 = datetime(2022, 3, 7, 10, tzinfo=UTC)


def reading(hour: int, value: float, **flags: bool) -> IntensityReading:
    return IntensityReading(
        zone="ES", at=T10.replace(hour=hour), gco2_per_kwh=value, source="replay", **flags
    )


def test_energy_is_gpus_plus_the_host_share_times_pue() -> None:
    e = job_energy(
        gpu_model="H100", gpus=2, cpus=8, memory_gb=64, seconds=5400, pue=1.2, model=EnergyModel()
    )
    # 700 W x 0.8 x 2 GPUs x 1.5 h x 1.2 = 2.016 kWh
    assert e.gpu_kwh == pytest.approx(2.016)
    # (8 x 2.12 W + 64 x 0.392 W) = 42.048 W x 1.5 h x 1.2 = 0.0756864 kWh
    assert e.host_kwh == pytest.approx(0.0756864)
    assert e.total_kwh == pytest.approx(2.0916864)


def test_window_intensity_is_time_weighted_over_the_hours_it_overlaps() -> None:
    readings = [reading(9, 1000), reading(10, 100), reading(11, 300), reading(12, 1000)]
    w = window_intensity(
        readings, start=T10 + timedelta(minutes=30), end=T10.replace(hour=11, minute=30)
    )
    assert w is not None
    assert w.gco2_per_kwh == pytest.approx(200)  # half an hour at 100, half at 300
    assert not w.estimated and not w.forecast and w.sources == ("replay",)


def test_gaps_are_filled_with_the_nearest_value_and_marked_estimated() -> None:
    w = window_intensity([reading(10, 100)], start=T10, end=T10 + timedelta(hours=2))
    assert w is not None
    assert w.gco2_per_kwh == pytest.approx(100) and w.estimated
    w = window_intensity([reading(10, 100, forecast=True)], start=T10, end=T10 + timedelta(hours=1))
    assert w is not None and w.forecast and not w.estimated
    assert window_intensity([], start=T10, end=T10 + timedelta(hours=1)) is None


def test_avoided_and_added_are_never_negative() -> None:
    one = Energy(gpu_kwh=1.0, host_kwh=0.0)
    clean = window_intensity([reading(10, 50)], start=T10, end=T10 + timedelta(hours=1))
    dirty = window_intensity([reading(10, 400)], start=T10, end=T10 + timedelta(hours=1))
    assert clean is not None and dirty is not None
    better = footprint(energy=one, intensity=clean, baseline_energy=one, baseline_intensity=dirty)
    assert (better.gco2, better.baseline_gco2) == (50, 400)
    assert (better.avoided_g, better.added_g) == (350, 0)
    worse = footprint(energy=one, intensity=dirty, baseline_energy=one, baseline_intensity=clean)
    assert (worse.avoided_g, worse.added_g) == (0, 350)
    unknown = footprint(energy=one, intensity=dirty, baseline_energy=None, baseline_intensity=None)
    assert unknown.baseline_gco2 is None and unknown.avoided_g == 0
