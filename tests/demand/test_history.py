"""The hourly demand table, checked against a hand calculation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from broker.demand.history import (
    ANY_MODEL,
    DemandRecord,
    Grouping,
    Metric,
    SeriesKey,
    build_table,
    peak_concurrency,
)
from broker.domain.enums import JobKind, Tier
from broker.simulation.traces import TraceJob, records_from_trace

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H100_P2 = SeriesKey("H100", Tier.P2)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rec(
    *,
    submit: float,
    start: float | None,
    end: float | None,
    est_h: float,
    gpus: float,
    model: str = "H100",
    tier: Tier = Tier.P2,
) -> DemandRecord:
    return DemandRecord(
        submitted_at=at(submit),
        started_at=None if start is None else at(start),
        ended_at=None if end is None else at(end),
        estimated_duration_s=est_h * 3600,
        gpus=gpus,
        gpu_model=model,
        tier=tier,
    )


# Times in hours from T0; the table covers 00:00-04:00.
RECORDS = [
    # A: 4 GPUs 00:30-02:15, spans two hour boundaries; asked for 2 h
    rec(submit=5 / 60, start=0.5, end=2.25, est_h=2, gpus=4),
    # B: 2 GPUs 01:00-01:30, overlaps A in hour 1
    rec(submit=50 / 60, start=1, end=1.5, est_h=0.5, gpus=2),
    # C: half an L4 for ten minutes
    rec(
        submit=10 / 60, start=10 / 60, end=20 / 60, est_h=1 / 6, gpus=0.5, model="L4", tier=Tier.P1
    ),
    # D: 3 GPUs from 02:15, the instant A releases its 4, so hour 2 peaks at 4, not 7
    rec(submit=100 / 60, start=2.25, end=3, est_h=1, gpus=3),
    # E: not started: counted from submit for its estimate, 03:30-04:00
    rec(submit=3.5, start=None, end=None, est_h=0.5, gpus=1, tier=Tier.P3),
    # F: still running at the end, past its 10-minute estimate: held until the end
    rec(submit=2.5, start=2.5, end=None, est_h=1 / 6, gpus=8, model="A100"),
    # G: cancelled while pending at 01:00: demand from its submit until then
    rec(submit=0, start=None, end=1, est_h=2, gpus=1, model="A100", tier=Tier.P3),
    # H: submitted and started the day before, runs into the window until 00:30
    rec(submit=-2, start=-1, end=0.5, est_h=1.5, gpus=2, model="A100"),
]


def test_peak_and_requested_gpu_hours_match_a_hand_calculation() -> None:
    table = build_table(RECORDS, start=T0, end=at(4))
    assert table.hours == 4
    peak = {k.label: table.series(k, Metric.PEAK_GPUS).tolist() for k in table.keys}
    assert peak == {
        "A100/P2": [2, 0, 8, 8],  # H until 00:30; F from 02:30 to the end
        "A100/P3": [1, 0, 0, 0],  # G
        "H100/P2": [4, 6, 4, 0],  # A; A + B; A then D; nothing after 03:00
        "H100/P3": [0, 0, 0, 1],  # E
        "L4/P1": [0.5, 0, 0, 0],  # C
    }
    requested = table.series(H100_P2, Metric.GPU_HOURS)
    # by submit hour, from the estimates: A 4 × 2 + B 2 × 0.5 in hour 0; D 3 × 1 in hour 1
    np.testing.assert_allclose(requested, [9, 3, 0, 0])
    np.testing.assert_allclose(
        table.series(SeriesKey("L4", Tier.P1), Metric.GPU_HOURS), [0.5 / 6, 0, 0, 0]
    )
    # H was asked for before the window: not counted as requested in it
    np.testing.assert_allclose(
        table.series(SeriesKey("A100", Tier.P2), Metric.GPU_HOURS), [0, 0, 8 / 6, 0]
    )


def test_grouped_peaks_are_joint_peaks_not_sums_of_peaks() -> None:
    total = build_table(RECORDS, start=T0, end=at(4), grouping=Grouping.TOTAL)
    (key,) = total.keys
    # hour 0: C + G + H = 3.5 at 00:10, then at 00:30 H releases 2 as A takes 4: G + A = 5
    # hour 2: D 3 (A gone at 02:15) + F 8 from 02:30; hour 3: F 8 + E 1
    assert total.series(key, Metric.PEAK_GPUS).tolist() == [5, 6, 11, 9]
    by_model = build_table(RECORDS, start=T0, end=at(4), grouping=Grouping.MODEL)
    assert by_model.series(SeriesKey("H100", None), Metric.PEAK_GPUS).tolist() == [4, 6, 4, 1]


def test_empty_hours_and_forced_series_are_zeros() -> None:
    idle = SeriesKey("T4", Tier.P3)
    table = build_table(RECORDS[:1], start=at(-3), end=at(6), keys=[idle])
    assert table.hours == 9
    assert table.series(idle, Metric.PEAK_GPUS).tolist() == [0.0] * 9
    assert table.series(H100_P2, Metric.PEAK_GPUS).tolist() == [0, 0, 0, 4, 4, 4, 0, 0, 0]
    # a key the table has never seen reads as zeros too
    assert table.series(SeriesKey("B200", Tier.P1), Metric.GPU_HOURS).sum() == 0


def test_until_keeps_only_the_hours_before_the_cut() -> None:
    table = build_table(RECORDS, start=T0, end=at(4))
    early = table.until(at(2))
    assert early.hours == 2 and early.end == at(2)
    assert early.series(H100_P2, Metric.PEAK_GPUS).tolist() == [4, 6]
    with pytest.raises(ValueError, match="outside"):
        table.until(at(5))


def test_peak_sweep_agrees_with_brute_force_on_random_intervals() -> None:
    rng = np.random.default_rng(7)
    # on a 15-minute grid, so many starts and ends coincide, some on hour boundaries
    starts = rng.integers(-4, 40, 300) * 900.0
    ends = starts + rng.integers(1, 16, 300) * 900.0
    gpus = rng.choice([0.25, 0.5, 1, 2, 8], 300)
    got = peak_concurrency(starts, ends, gpus, hours=10)
    for hour in range(10):
        # the level only changes at events: check it just after each one in the hour
        instants = [hour * 3600.0, *(t for t in np.r_[starts, ends] if 0 <= t - hour * 3600 < 3600)]
        level = max(gpus[(starts <= t) & (ends > t)].sum() for t in instants)
        assert got[hour] == pytest.approx(level)


def test_records_need_aware_times_and_hour_aligned_bounds() -> None:
    with pytest.raises(ValueError, match="timezone"):
        DemandRecord(
            submitted_at=datetime(2024, 1, 1),
            started_at=None,
            ended_at=None,
            estimated_duration_s=60,
            gpus=1,
            gpu_model="L4",
            tier=Tier.P1,
        )
    with pytest.raises(ValueError, match="on the hour"):
        build_table([], start=at(0.5), end=at(2))


def test_trace_rows_become_records_that_start_when_submitted() -> None:
    def job(job_id: str, **kw: object) -> TraceJob:
        fields: dict[str, object] = {
            "job_id": job_id,
            "submit_s": 90.0,
            "duration_s": 600,
            "gpus": 1,
            "gpu_fraction": None,
            "nodes": 1,
            "gpu_models": (),
            "tier": Tier.P3,
            "tenant": "t",
            "deadline_s": None,
            "origin": None,
            "preemptible": None,
            "kind": JobKind.EXPERIMENT,
        }
        fields.update(kw)
        return TraceJob(**fields)  # type: ignore[arg-type]

    gang, half, anything = records_from_trace(
        [
            job("gang", gpus=8, nodes=2, gpu_models=("H100", "A100-80GB"), tier=Tier.P2),
            job("half", gpu_fraction=0.5, gpu_models=("L4", "T4"), tier=Tier.P1),
            job("any"),
        ],
        epoch=T0,
    )
    assert (gang.gpus, gang.gpu_model, gang.tier) == (16, "H100", Tier.P2)
    assert gang.submitted_at == gang.started_at == T0 + timedelta(seconds=90)
    assert gang.ended_at == T0 + timedelta(seconds=690)
    assert gang.estimated_duration_s == 600
    assert (half.gpus, half.gpu_model) == (0.5, "L4")
    assert anything.gpu_model == ANY_MODEL
