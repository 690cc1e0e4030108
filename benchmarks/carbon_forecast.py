"""Evaluate the broker's carbon-intensity forecaster on real hourly data: train 2021, test 2022.

For each zone of the Electricity Maps 2021-2022 file (BR, ES, NO, US-CAL-CISO):

1. train the model (``carbon.forecast.train_zone``) once, on hours that ended by 2022-01-01;
2. forecast 1..48 h ahead from every hour of 2022 as origin (targets inside 2022), with the
   model and the baselines (persistence, seasonal-naive 24 h and 168 h); print MAE and
   MAPE at horizons 1, 6, 12, 24, 48 h and the mean over 1..48 h;
3. time-shifting: every 6 h of 2022 a job of D in {1, 4, 8} h with slack S in {12, 24} h is
   submitted; each method picks the start with the least forecast emissions (forecasts
   issued at submission) and is charged the actual emissions; print the share of the
   oracle's saving over running at once that it captures (``carbon.forecast.evaluation``).

``--select`` first repeats the model choice made for the package: both model kinds trained
on January-September 2021 and scored on October-December 2021, 2022 untouched. ``--short``
trains on single months of 2021 and tests on the following four weeks, 2022 untouched.

    .venv/bin/python benchmarks/carbon_forecast.py              # data from ../shared
    .venv/bin/python benchmarks/carbon_forecast.py --select --kinds ridge,hgb
    .venv/bin/python benchmarks/carbon_forecast.py --short
    .venv/bin/python benchmarks/carbon_forecast.py --data DIR --json results.json

Figures and their discussion: docs/carbon-forecast.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from numpy.typing import NDArray

from carbon.forecast import (
    Forecaster,
    Hourly,
    ModelKind,
    Persistence,
    SeasonalNaive,
    train_zone,
)
from carbon.forecast.evaluation import captured_saving, mae, mape, shift_jobs
from carbon.replay import load_series

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "carbon" / "normalized"
FILE = "electricitymaps_hourly_2021_2022.csv"
ZONES = ("BR", "ES", "NO", "US-CAL-CISO")
HORIZONS = (1, 6, 12, 24, 48)
MAX_H = 48
DURATIONS = (1, 4, 8)
SLACKS = (12, 24)
SUBMIT_EVERY_H = 6
TEST_START = datetime(2022, 1, 1, tzinfo=UTC)
VALID_START = datetime(2021, 10, 1, tzinfo=UTC)
SHORT_TEST_H = 28 * 24

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Period:
    """Train on hours ended by `train_end`; test origins whose targets lie in [start, end)."""

    train_end: datetime
    test_start: datetime
    test_end: datetime


def scores(
    series: Hourly, forecaster: Forecaster, *, period: Period
) -> tuple[dict[str, Any], float]:
    """Error and time-shifting figures of one forecaster over one test period."""
    first = series.position(period.test_start)
    last_target = series.position(period.test_end) - 1
    origins = np.arange(first - 1, last_target - MAX_H + 1, dtype=np.int64)
    started = time.perf_counter()
    forecasts = forecaster.predict_positions(series, origins=origins, hours=MAX_H)
    predict_s = time.perf_counter() - started
    actual = series.values[origins[:, None] + np.arange(1, MAX_H + 1)[None, :]]
    errors: dict[str, Any] = {
        f"mae_{h}h": mae(forecasts[:, h - 1], actual[:, h - 1]) for h in HORIZONS
    }
    errors |= {f"mape_{h}h": mape(forecasts[:, h - 1], actual[:, h - 1]) for h in HORIZONS}
    errors["mae_mean"] = mae(forecasts, actual)
    # A job submitted at position s sees forecasts from origin s - 1: row s - first.
    rows = np.arange(0, origins.size, SUBMIT_EVERY_H)
    captured: dict[str, float] = {}
    oracle_pct: dict[str, float] = {}
    totals = np.zeros(3)
    for duration in DURATIONS:
        for slack in SLACKS:
            span = slack + duration
            outcome = shift_jobs(
                actual=actual[rows, :span], forecast=forecasts[rows, :span], duration=duration
            )
            key = f"D{duration}_S{slack}"
            captured[key] = captured_saving(outcome)
            run_now = float(outcome.run_now.sum())
            oracle_pct[key] = 100.0 * (run_now - float(outcome.oracle.sum())) / run_now
            totals += (run_now, float(outcome.chosen.sum()), float(outcome.oracle.sum()))
    captured["all"] = 100.0 * (totals[0] - totals[1]) / (totals[0] - totals[2])
    errors["captured"] = captured
    errors["oracle_saving_pct"] = oracle_pct
    errors["jobs_per_setting"] = int(rows.size)
    return errors, predict_s


def evaluate_zone(
    series: Hourly, *, zone: str, kinds: list[ModelKind], period: Period
) -> dict[str, Any]:
    """Train each model kind once, then score it and the baselines."""
    methods: dict[str, Forecaster] = {}
    timings: dict[str, float] = {}
    for kind in kinds:
        started = time.perf_counter()
        model = train_zone(series, now=period.train_end, zone=zone, kind=kind)
        timings[f"train_{kind}_s"] = time.perf_counter() - started
        methods[f"model ({kind})"] = model
        meta = model.metadata()
        alpha = f", ridge alpha {meta['ridge_alpha']:g}" if meta["ridge_alpha"] else ""
        print(
            f"{zone} {kind}: targets [{meta['train_start'][:10]}, {meta['train_end'][:10]}) "
            f"({meta['rows']} rows{alpha}) in {timings[f'train_{kind}_s']:.1f} s"
        )
    methods["persistence"] = Persistence()
    methods["seasonal-24h"] = SeasonalNaive(24)
    methods["seasonal-168h"] = SeasonalNaive(168)
    # The test never reads past its own end: later data (none in this file) stays unseen.
    visible = series.before(period.test_end)
    results: dict[str, Any] = {}
    for name, forecaster in methods.items():
        results[name], timings[f"predict_{name}_s"] = scores(visible, forecaster, period=period)
    return {"methods": results, "timings": timings}


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def print_errors(zone: str, results: dict[str, Any]) -> None:
    heads = " | ".join(f"{h} h" for h in HORIZONS)
    print(f"\n#### {zone}: MAE gCO2e/kWh (MAPE %)\n")
    print(f"| method | {heads} | mean 1-48 h |")
    print("|---" * (len(HORIZONS) + 2) + "|")
    for name, r in results["methods"].items():
        cells = " | ".join(f"{_fmt(r[f'mae_{h}h'])} ({_fmt(r[f'mape_{h}h'])} %)" for h in HORIZONS)
        print(f"| {name} | {cells} | {_fmt(r['mae_mean'])} |")


def print_captured(all_results: dict[str, dict[str, Any]]) -> None:
    keys = [f"D{d}_S{s}" for d in DURATIONS for s in SLACKS]
    heads = " | ".join(f"D={k[1:].split('_')[0]} S={k.split('_S')[1]}" for k in keys)
    print("\n#### Captured share of the oracle's time-shifting saving (%)\n")
    print(f"| zone | method | {heads} | all |")
    print("|---" * (len(keys) + 3) + "|")
    for zone, results in all_results.items():
        methods = results["methods"]
        oracle = next(iter(methods.values()))["oracle_saving_pct"]
        cells = " | ".join(f"{_fmt(oracle[k])} %" for k in keys)
        print(f"| {zone} | *oracle saving vs run-now* | {cells} | |")
        for name, r in methods.items():
            cells = " | ".join(_fmt(r["captured"][k]) for k in keys)
            print(f"| {zone} | {name} | {cells} | **{_fmt(r['captured']['all'])}** |")


def print_selection(all_results: dict[str, dict[str, Any]], kinds: list[ModelKind]) -> None:
    print("\n#### Model selection: train Jan-Sep 2021, validate Oct-Dec 2021\n")
    print("| zone | method | MAE 1 h | MAE 24 h | mean MAE 1-48 h | / persistence | captured % |")
    print("|---|---|---|---|---|---|---|")
    ratios: dict[str, list[float]] = {f"model ({k})": [] for k in kinds}
    for zone, results in all_results.items():
        methods = results["methods"]
        base = methods["persistence"]["mae_mean"]
        for name, r in methods.items():
            ratio = r["mae_mean"] / base
            ratios.setdefault(name, []).append(ratio)
            print(
                f"| {zone} | {name} | {_fmt(r['mae_1h'])} | {_fmt(r['mae_24h'])} | "
                f"{_fmt(r['mae_mean'])} | {ratio:.3f} | {_fmt(r['captured']['all'])} |"
            )
    print("\nmean over zones of (mean MAE 1-48 h / persistence's):")
    for name, values in ratios.items():
        print(f"  {name}: {float(np.mean(values)):.3f}")


def short_history_study(series: Hourly, *, zone: str) -> list[dict[str, Any]]:
    """Train on one calendar month of 2021 (Feb..Nov), test on the next 28 days."""
    rows = []
    for month in range(2, 12):
        start = datetime(2021, month, 1, tzinfo=UTC)
        now = datetime(2021, month + 1, 1, tzinfo=UTC)
        model = train_zone(series, now=now, zone=zone, window=now - start)
        first = series.position(now)
        origins = np.arange(first - 1, first - 1 + SHORT_TEST_H, dtype=np.int64)
        actual = series.values[origins[:, None] + np.arange(1, MAX_H + 1)[None, :]]
        ours = model.predict_positions(series, origins=origins, hours=MAX_H)
        flat = Persistence().predict_positions(series, origins=origins, hours=MAX_H)
        rows.append(
            {
                "zone": zone,
                "month": month,
                "alpha": getattr(model.regressor, "alpha", None),
                "ratio_24h": mae(ours[:, 23], actual[:, 23]) / mae(flat[:, 23], actual[:, 23]),
                "ratio_mean": mae(ours, actual) / mae(flat, actual),
            }
        )
    return rows


def print_short(rows: list[dict[str, Any]]) -> None:
    print("\n#### Short histories: one month of 2021 to train, the next 28 days to test\n")
    print("| zone | months model < persistence at 24 h | mean MAE ratio 24 h | ratio 1-48 h |")
    print("|---|---|---|---|")
    for zone in dict.fromkeys(r["zone"] for r in rows):
        mine = [r for r in rows if r["zone"] == zone]
        wins = sum(r["ratio_24h"] < 1.0 for r in mine)
        r24 = float(np.mean([r["ratio_24h"] for r in mine]))
        rall = float(np.mean([r["ratio_mean"] for r in mine]))
        print(f"| {zone} | {wins} / {len(mine)} | {r24:.3f} | {rall:.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with {FILE}")
    parser.add_argument("--zones", default=",".join(ZONES), help="comma-separated zone ids")
    parser.add_argument("--kinds", default="ridge", help="model kinds: ridge, hgb or both")
    parser.add_argument("--select", action="store_true", help="also run the 2021 validation")
    parser.add_argument("--short", action="store_true", help="also run the one-month study")
    parser.add_argument("--json", type=Path, default=None, help="write every figure as JSON")
    args = parser.parse_args(argv)
    path = args.data / FILE
    if not path.is_file():
        print(f"no data: {path} not found (pass --data DIR)", file=sys.stderr)
        return 2
    kinds: list[ModelKind] = []
    for kind in args.kinds.split(","):
        if kind not in ("ridge", "hgb"):
            parser.error(f"unknown kind {kind!r}")
        kinds.append("ridge" if kind == "ridge" else "hgb")
    started = time.perf_counter()
    print(
        f"python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, cores {len(os.sched_getaffinity(0))}"
    )
    print("command:", " ".join(["benchmarks/carbon_forecast.py", *(argv or sys.argv[1:])]))
    all_series = load_series([path])
    out: dict[str, Any] = {}
    zones = [z for z in args.zones.split(",") if z]
    if args.select:
        valid = Period(train_end=VALID_START, test_start=VALID_START, test_end=TEST_START)
        selection = {
            z: evaluate_zone(Hourly.from_series(all_series[z]), zone=z, kinds=kinds, period=valid)
            for z in zones
        }
        print_selection(selection, kinds)
        out["selection"] = selection
    if args.short:
        short = [
            row
            for z in zones
            for row in short_history_study(
                Hourly.from_series(all_series[z]).before(TEST_START), zone=z
            )
        ]
        print_short(short)
        out["short"] = short
    end = max(all_series[z].end for z in zones)
    test = Period(train_end=TEST_START, test_start=TEST_START, test_end=end)
    results = {}
    for zone in zones:
        results[zone] = evaluate_zone(
            Hourly.from_series(all_series[zone]), zone=zone, kinds=kinds, period=test
        )
        print_errors(zone, results[zone])
    print_captured(results)
    out["test"] = results
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.1f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
