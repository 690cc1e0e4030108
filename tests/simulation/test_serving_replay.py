"""The serving replay (`broker.simulation.serving`): queue model, policies, accounting, CLI.

Hand-made traces use round rates (prefill 100 tok/s, decode 10 tok/s per stream), so a
request of 100 prompt and 10 generated tokens takes exactly 2 s of service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.cli.main import main
from broker.simulation.serving.figures import Pricing, Slo, summarize
from broker.simulation.serving.rates import ServingRates, measured_rates
from broker.simulation.serving.replay import (
    Outcome,
    PolicyKind,
    ReplaySettings,
    Variant,
    peak_replicas,
    replay,
)
from broker.simulation.serving.requests import (
    Request,
    RequestTrace,
    TraceError,
    daily_factor,
    daily_overlay,
    read_requests,
    synthetic_history,
)

START = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def rates(*, max_batch: int = 1, gpus: int = 1) -> ServingRates:
    return ServingRates(
        gpu_model="H100",
        prefill_tok_s=100.0,
        decode_tok_s=10.0,
        max_batch=max_batch,
        gpus_per_replica=gpus,
        source="test",
    )


def trace(*arrivals: float, context: int = 100, generated: int = 10) -> RequestTrace:
    return RequestTrace(
        start=START, requests=tuple(Request(a, context, generated) for a in arrivals)
    )


def pricing(*, intensity: float = 100.0) -> Pricing:
    return Pricing(
        site="lab",
        grid_zone="SE",
        price_per_gpu_hour=2.0,
        gpu_power_kw=0.5,
        utilisation=0.8,
        pue=1.25,
        hourly_gco2_per_kwh={},
        fallback_gco2_per_kwh=intensity,
    )


def test_measured_rates_solve_the_two_rows() -> None:
    r = measured_rates(gpu_model="H100", llm="LLaMA 70B")
    # per-stream time of each row = batch × output / (tok/s per GPU × tp)
    for batch, out, thr in ((96, 128, 346), (64, 2048, 1011)):
        assert r.service_s(context_tokens=2048, generated_tokens=out) == pytest.approx(
            batch * out / (thr * 2)
        )
    assert (r.max_batch, r.gpus_per_replica) == (64, 2)


def test_queue_model_on_a_hand_computed_trace() -> None:
    # One replica, one slot, 2 s per request; arrivals at 0, 1, 1.5 and 10 s:
    # served 0–2, 2–4, 4–6 and 10–12, so latencies 2, 3, 4.5 and 2.
    t = trace(0.0, 1.0, 1.5, 10.0)
    settings = ReplaySettings(rates=rates(), startup_s=0.0)
    out = replay(t, settings=settings, variant=Variant(kind=PolicyKind.STATIC_PEAK))
    assert peak_replicas(trace(0.0, 2.5), rates=rates()) == 1
    # static peak would hold 3 here (three in service at once); force one replica
    one = replay(
        t,
        settings=ReplaySettings(rates=rates(), startup_s=0.0, min_replicas=1, max_replicas=1),
        variant=Variant(kind=PolicyKind.REACTIVE),
    )
    assert one.latency_s == pytest.approx([2.0, 3.0, 4.5, 2.0])
    assert out.latency_s == pytest.approx([2.0, 2.0, 2.0, 2.0])
    assert out.policy["static_replicas"] == 3


def test_static_peak_never_misses_the_slo() -> None:
    arrivals = [i * 0.37 % 50 for i in range(400)]
    t = trace(*sorted(arrivals))
    r = rates(max_batch=4)
    out = replay(t, settings=ReplaySettings(rates=r), variant=Variant(kind=PolicyKind.STATIC_PEAK))
    figures = summarize(out, trace=t, rates=r, slo=Slo(slowdown=1.0), pricing=pricing())
    assert figures["within_slo"] == 1.0
    assert figures["queueing_p99_s"] == pytest.approx(0.0, abs=1e-9)


def test_reactive_scales_up_under_a_step() -> None:
    # 0.5 rps for 5 minutes, then 10 rps: 2 s requests, 4 slots a replica.
    arrivals = [i * 2.0 for i in range(150)] + [300 + i * 0.1 for i in range(3000)]
    t = trace(*arrivals)
    r = rates(max_batch=4)
    out = replay(
        t,
        settings=ReplaySettings(rates=r, startup_s=30.0, max_replicas=20),
        variant=Variant(kind=PolicyKind.REACTIVE),
    )
    assert out.replicas_by_minute[3] == 1
    assert max(out.replicas_by_minute) >= 7  # 20 in flight / (4 × 0.7) → 8
    assert out.modes["panic"] > 0


def test_scale_to_zero_cold_start_lasts_the_startup() -> None:
    # One request, then nothing for 20 minutes, then one more: the service goes to zero
    # and the second request waits exactly the start-up.
    t = trace(0.0, 1200.0)
    settings = ReplaySettings(
        rates=rates(), startup_s=75.0, scale_to_zero_after_s=60.0, scale_down_delay_s=30.0
    )
    zero = replay(
        t, settings=settings, variant=Variant(kind=PolicyKind.REACTIVE, scale_to_zero=True)
    )
    assert [d for _, d in zero.cold_starts] == [pytest.approx(75.0)]
    assert zero.cold_starts[0][0] == pytest.approx(1200.0)
    assert zero.latency_s[1] == pytest.approx(75.0 + 2.0)
    warm = replay(t, settings=settings, variant=Variant(kind=PolicyKind.REACTIVE))
    assert warm.cold_starts == [] and warm.latency_s[1] == pytest.approx(2.0)
    idle = [
        summarize(o, trace=t, rates=rates(), slo=Slo(), pricing=pricing()) for o in (zero, warm)
    ]
    assert idle[0]["idle_replica_hours"] < 0.2 * idle[1]["idle_replica_hours"]


def test_accounting_sums_on_a_hand_computed_case() -> None:
    # Two 2-GPU replicas: one for the whole hour, one for 30 minutes (15 of them starting).
    t = trace(10.0, 3500.0)
    outcome = Outcome(
        variant="hand",
        latency_s=[2.0, 2.0],
        service_s=[2.0, 2.0],
        spans=[(0.0, 0.0, 3600.0), (600.0, 1500.0, 2400.0)],
        cold_starts=[],
        end_s=3600.0,
        replicas_by_minute=[1] * 60,
    )
    f = summarize(outcome, trace=t, rates=rates(gpus=2), slo=Slo(), pricing=pricing(intensity=200))
    assert f["replica_hours"] == pytest.approx(1.5)
    assert f["starting_replica_hours"] == pytest.approx(0.25)
    assert f["gpu_hours"] == pytest.approx(3.0)
    assert f["cost_usd"] == pytest.approx(6.0)  # 3 GPU-h × 2 USD
    assert f["energy_kwh"] == pytest.approx(1.5)  # 3 × 0.5 kW × 0.8 × 1.25
    assert f["kgco2e"] == pytest.approx(0.3)  # 1.5 kWh × 200 g
    # trace minutes 0–58; minute 0 and 58 have arrivals: 57 idle minutes, the first replica
    # over all of them, the second over minutes 10–39
    assert f["idle_minutes"] == 57
    assert f["idle_replica_hours"] == pytest.approx((57 + 30) / 60, abs=1e-3)


def test_replay_is_deterministic() -> None:
    arrivals = sorted((i * 7.3) % 600 for i in range(500))
    t = trace(*arrivals)
    r = rates(max_batch=2)
    settings = ReplaySettings(rates=r, startup_s=20.0)
    for kind in PolicyKind:
        a = replay(t, settings=settings, variant=Variant(kind=kind, scale_to_zero=True))
        b = replay(t, settings=settings, variant=Variant(kind=kind, scale_to_zero=True))
        assert (a.latency_s, a.spans, a.modes) == (b.latency_s, b.spans, b.modes)


def test_reads_the_azure_format(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
    )
    t = read_requests(path)
    assert t.start == datetime(2023, 11, 16, 18, 15, tzinfo=UTC)
    assert t.requests[0] == Request(pytest.approx(46.68059), 374, 44)  # type: ignore[arg-type]


@pytest.mark.skipif(not (DATA / "inference").is_dir(), reason="shared data not beside the repo")
def test_reads_the_shared_azure_trace() -> None:
    t = read_requests(DATA / "inference/azure_llm_2023/AzureLLMInferenceTrace_code.csv")
    assert len(t.requests) == 8819 and t.minutes == 58


FLEET = (
    "sites:\n"
    "  - {name: lab, kind: sim, region: r, grid_zone: SE,\n"
    "     pools: [{gpu_model: H100, gpu_memory_gb: 80, gpus_per_node: 8, nodes: 1,\n"
    "              price_on_demand: 3.0}]}\n"
)
GOOD = "arrival_s,context_tokens,generated_tokens\n0,100,10\n30,100,10\n"


@pytest.mark.parametrize(
    ("trace_text", "fleet_text", "extra", "needle"),
    [
        (None, FLEET, (), "cannot read trace"),
        ("a,b\n1,2\n", FLEET, (), "needs an arrival column"),
        ("arrival_s,context_tokens,generated_tokens\nx,1,1\n", FLEET, (), "line 2"),
        (GOOD, FLEET, ("--gpu-model", "T4"), "no measured serving rates"),
        (GOOD, FLEET, ("--gpu-model", "H200"), "no pool of H200"),
        (GOOD, FLEET, ("--slo-ms", "-5"), "must be > 0"),
        (GOOD, FLEET, ("--start", "2022-01-01"), "no UTC offset"),
        (GOOD, FLEET, ("--min-replicas", "5", "--max-replicas", "2"), "max_replicas"),
        (GOOD, None, (), "cannot read config"),
        (GOOD, FLEET, ("--overlay-hours", "8-20"), "needs --overlay-days"),
        (GOOD, FLEET, ("--overlay-days", "1", "--overlay-hours", "8-x"), "expected START-END"),
        (GOOD, FLEET, ("--overlay-days", "1", "--overlay-trough", "2"), "trough"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trace_text: str | None,
    fleet_text: str | None,
    extra: tuple[str, ...],
    needle: str,
) -> None:
    trace_path, fleet_path = tmp_path / "t.csv", tmp_path / "f.yaml"
    if trace_text is not None:
        trace_path.write_text(trace_text)
    if fleet_text is not None:
        fleet_path.write_text(fleet_text)
    args = ["simulate-serving", "--trace", str(trace_path), "--fleet", str(fleet_path)]
    code = main([*args, "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("broker: ") and needle in err and "Traceback" not in err


def test_cli_writes_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_text(GOOD)
    (tmp_path / "f.yaml").write_text(FLEET)
    args = ["simulate-serving", "--trace", str(tmp_path / "t.csv"), "--fleet"]
    code = main(
        [*args, str(tmp_path / "f.yaml"), "--out", str(tmp_path / "o"), "--history-days", "0"]
    )
    assert code == 0
    assert (tmp_path / "o" / "summary.json").is_file()
    assert "static-peak" in capsys.readouterr().out


# --- the daily overlay (synthetic) -------------------------------------------------------

HOUR_OF_REQUESTS = trace(*[i * 0.5 for i in range(7200)])  # 2 a second for an hour, 12:00


def per_hour(t: RequestTrace) -> list[int]:
    counts = [0] * (t.minutes // 60 + 1)
    for r in t.requests:
        counts[int(r.at_s // 3600)] += 1
    return counts


def test_the_overlay_follows_the_assumed_daily_curve_from_the_trace_s_own_hour() -> None:
    days = daily_overlay(HOUR_OF_REQUESTS, days=2, seed=1)
    counts = per_hour(days)[:48]
    anchor = daily_factor(12.0)
    for h, n in enumerate(counts):
        # the mean level over hour h (12:00 + h), relative to the trace's hour
        level = sum(daily_factor(12 + h + k / 60) for k in range(60)) / 60 / anchor
        assert n == pytest.approx(7200 * level, rel=0.06), (h, n, level)
    assert max(counts) > 7200  # 15:00 is busier than the trace's 12:00: layered copies
    tokens = {(r.context_tokens, r.generated_tokens) for r in days.requests}
    assert tokens == {(100, 10)}  # the trace's own requests
    assert daily_overlay(HOUR_OF_REQUESTS, days=2, seed=1) == days  # seeded


def test_the_overlay_keeps_only_its_active_hours() -> None:
    days = daily_overlay(HOUR_OF_REQUESTS, days=1, active_hours=(20, 8))  # nights only
    hours = {(12 + int(r.at_s // 3600)) % 24 for r in days.requests}
    assert hours == {*range(20, 24), *range(0, 8)}
    for bad in ((8, 8), (25, 3)):
        with pytest.raises(TraceError):
            daily_overlay(HOUR_OF_REQUESTS, days=1, active_hours=bad)
    with pytest.raises(TraceError):
        daily_overlay(HOUR_OF_REQUESTS, days=0)


def test_scale_to_zero_frees_a_working_hours_service_at_night() -> None:
    # Requests only 08:00-20:00: a night of twelve idle hours, warm vs scale to zero
    sparse = trace(*[i * 4.0 for i in range(900)])  # one every 4 s
    days = daily_overlay(sparse, days=1, active_hours=(8, 20))
    settings = ReplaySettings(rates=rates(max_batch=4), startup_s=60.0, max_replicas=10)
    figures = [
        summarize(
            replay(
                days, settings=settings, variant=Variant(kind=PolicyKind.REACTIVE, scale_to_zero=z)
            ),
            trace=days,
            rates=rates(max_batch=4),
            slo=Slo(),
            pricing=pricing(),
        )
        for z in (False, True)
    ]
    warm, zero = (f["idle_replica_hours"] for f in figures)
    assert warm > 10  # a replica all night
    assert zero < 0.05 * warm  # gone within start-up + a stable window of the last request
    assert figures[1]["cold_starts"] == 1  # woken once, at 08:00


def test_the_history_of_a_working_hours_overlay_is_idle_at_night_too() -> None:
    history = synthetic_history([6.0] * 60, start=START, days=2, active_hours=(8, 20))
    by_hour: dict[int, set[float]] = {}
    for sample in history:
        by_hour.setdefault(sample.at.hour, set()).add(sample.value)
    assert all(by_hour[h] == {0.0} for h in (*range(0, 8), *range(20, 24)))
    assert all(min(by_hour[h]) > 0 for h in range(8, 20))
