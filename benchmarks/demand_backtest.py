"""Backtest the GPU demand forecaster on the real Philly and ITP traces.

Each trace is converted to canonical rows by `broker.simulation.convert` (the same code as
`python -m broker.simulation.convert`, whole trace, seed 0), turned into `DemandRecord`s
that start when submitted (the traces record no queueing), and aggregated into hourly peak
concurrent GPUs: once for the whole trace (the sources name no GPU model) and once per
derived first-choice model (the converter's synthetic labels, see docs/traces.md).

Rolling origin: the first `--train-days` days are history only; then from each day's
midnight the forecaster predicts the next 24 hours, refitted weekly on everything before
the origin, next to three naive rules (same hour yesterday, same hour last week, last
value), each with a p90 from its own past errors. Prints two Markdown tables (p50 error;
p90 under-forecast share and pinball loss) and the wall time; docs/demand-forecast.md
explains them.

    .venv/bin/python benchmarks/demand_backtest.py [--data ../shared/data] [--train-days 28]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.demand.backtest import METHODS, BacktestResult, rolling_origin
from broker.demand.history import HOUR, Grouping, build_table, floor_hour
from broker.simulation import convert
from broker.simulation.traces import records_from_trace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
# Where each source file lies under --data, and the calendar date of its day 0: Philly's is
# the midnight of its first timestamp (local time, no zone given); ITP's collection start is
# only known as a date (README: 2021-03-04), so its hours of day are a constant shift away.
SOURCES = {
    "philly": ("traces/philly_pollux/philly.csv.gz", datetime(2017, 9, 4, tzinfo=UTC)),
    "itp": (
        "traces/microsoft_itp_elasticflow/itp_raw_all_clusters.csv.gz",
        datetime(2021, 3, 4, tzinfo=UTC),
    ),
}
LABELS = {
    "model": "model",
    "naive_day": "yesterday",
    "naive_week": "last week",
    "last_value": "last",
}


def backtest_trace(
    source: str, *, data: Path, train_days: int, refit_days: int
) -> dict[Grouping, BacktestResult]:
    """Convert one trace and backtest its total and per-model series."""
    relative, day0 = SOURCES[source]
    source_jobs = convert.READERS[source](data / relative)
    conversion = convert.convert(source_jobs, source=source, seed=0)
    first = min(j.t_s for j in source_jobs if j.gpus > 0 and j.duration_s > 0)
    records = records_from_trace(conversion.jobs, epoch=day0 + timedelta(seconds=first))
    start = floor_hour(min(r.submitted_at for r in records))
    start -= start.hour * HOUR  # origins at midnight
    end = floor_hour(max(r.submitted_at for r in records)) + HOUR
    results = {}
    for grouping in (Grouping.TOTAL, Grouping.MODEL):
        table = build_table(records, start=start, end=end, grouping=grouping)
        results[grouping] = rolling_origin(
            table, train_hours=train_days * 24, refit_every_hours=refit_days * 24
        )
    return results


def tables(results: dict[str, dict[Grouping, BacktestResult]]) -> str:
    """The two Markdown tables of the docs."""
    methods = " | ".join(LABELS[m] for m in METHODS)
    sep = "|---" * (3 + len(METHODS)) + "|"
    mae = [f"| trace | series | mean GPUs | {methods} |", sep]
    p90 = [f"| trace | series | mean GPUs | {methods} |", sep]
    for source, by_grouping in results.items():
        for grouping in (Grouping.TOTAL, Grouping.MODEL):
            result = by_grouping[grouping]
            keys = dict.fromkeys(s.series for s in result.scores)
            for key in keys:
                scores = [result.score(key, m) for m in METHODS]
                best_mae = min(s.mae_p50 for s in scores)
                best_pin = min(s.pinball_p90 for s in scores)
                head = f"| {source} | {key.gpu_model} | {scores[0].mean_actual:,.0f} | "
                mae.append(
                    head
                    + " | ".join(
                        _bold(f"{s.mae_p50:,.1f} ({s.mae_share:.0%})", s.mae_p50 == best_mae)
                        for s in scores
                    )
                    + " |"
                )
                p90.append(
                    head
                    + " | ".join(
                        _bold(
                            f"{s.under_p90:.0%} / {s.pinball_p90:,.1f}", s.pinball_p90 == best_pin
                        )
                        for s in scores
                    )
                    + " |"
                )
    return "\n".join(
        [
            "MAE of the p50, GPUs (share of the mean):",
            "",
            *mae,
            "",
            "Hours with actual > p90 (nominal 10 %) / pinball loss at 0.9, GPUs:",
            "",
            *p90,
        ]
    )


def _bold(text: str, best: bool) -> str:
    return f"**{text}**" if best else text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--train-days", type=int, default=28, help="history before the 1st origin")
    parser.add_argument("--refit-days", type=int, default=7, help="refit the model every N days")
    parser.add_argument("--traces", nargs="+", choices=sorted(SOURCES), default=["philly", "itp"])
    args = parser.parse_args(argv)
    missing = [s for s in args.traces if not (args.data / SOURCES[s][0]).exists()]
    if missing:
        print(f"error: no {', '.join(missing)} trace under {args.data}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    results = {}
    for source in args.traces:
        t = time.perf_counter()
        results[source] = backtest_trace(
            source, data=args.data, train_days=args.train_days, refit_days=args.refit_days
        )
        total = results[source][Grouping.TOTAL]
        print(
            f"{source}: {len(total.origins)} origins "
            f"({total.origins[0]:%Y-%m-%d} .. {total.origins[-1]:%Y-%m-%d}), "
            f"{total.fits} fits per grouping, {time.perf_counter() - t:.1f} s",
            file=sys.stderr,
        )
    print(tables(results))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nwall time {time.perf_counter() - began:.0f} s on {cpus} CPU(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
