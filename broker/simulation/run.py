"""`broker simulate`: replay a trace on a fleet under several policies and write the results.

One run replays the same trace through the broker's engine and through the FIFO first-fit
carbon-blind baseline, computes the offline lower bound on emissions, and writes
`summary.json` and `report.html` (charts of GPU allocation and emissions over time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import load_settings
from broker.domain.engine import Engine
from broker.fleet_settings import pools_from_settings, site_from_settings
from broker.scheduling.loop import engine_settings
from broker.service import load_latency
from broker.simulation.chart import render
from broker.simulation.oracle import ReplayOracle
from broker.simulation.report import emissions_by_hour, offline_lower_bound, summarize
from broker.simulation.simulator import Simulation
from broker.simulation.traces import read_trace
from carbon.replay import ReplaySource
from carbon.static import StaticTableSource

POLICIES = ("broker", "fifo")  # "all" runs both


def _progress(label: str) -> Any:
    """A progress bar on a terminal; one line per tenth of the jobs otherwise (CI logs)."""
    started = time.monotonic()
    tty = sys.stderr.isatty()
    last = [0.0, -1.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        tenth = 10 * done // max(1, total)
        if tty and done != total and now - last[0] < 0.2:
            return
        if not tty and tenth == last[1]:
            return
        last[0], last[1] = now, tenth
        width = 30
        filled = int(width * done / max(1, total))
        head = "\r" if tty else ""
        end = "\n" if done == total or not tty else ""
        bar = "#" * filled + "." * (width - filled)
        sys.stderr.write(
            f"{head}{label:7} [{bar}] {done:,}/{total:,} jobs {now - started:5.1f}s{end}"
        )
        sys.stderr.flush()

    return show


def cmd_simulate(args: argparse.Namespace) -> int:
    trace = read_trace(Path(args.trace))
    settings = load_settings(Path(args.fleet), env={})
    start = datetime.fromisoformat(args.start).astimezone(UTC)
    sites = [site_from_settings(s) for s in settings.sites]
    pools = [p for s in settings.sites for p in pools_from_settings(s)]
    latency = load_latency(settings)
    replay = ReplaySource.from_csv(args.carbon, wrap=True) if args.carbon else None
    carbon = ReplayOracle(replay=replay, static=StaticTableSource.default())
    engine = Engine(engine_settings(settings.scheduler))
    util = settings.scheduler.gpu_utilisation
    policies = POLICIES if args.policy == "all" else (args.policy,)
    summaries: dict[str, Any] = {}
    allocation: dict[str, Any] = {}
    emissions: dict[str, Any] = {}
    outcome = None
    for policy in policies:
        sim = Simulation(
            trace=trace,
            sites=sites,
            pools=pools,
            latency=latency,
            carbon=carbon,
            engine=engine,
            start=start,
            policy=policy,
            progress=None if args.quiet else _progress(policy),
        )
        outcome = sim.run()
        summaries[policy] = summarize(outcome, carbon=carbon, utilisation=util)
        allocation[policy] = outcome.allocation
        emissions[policy] = emissions_by_hour(outcome, carbon=carbon, utilisation=util)
    assert outcome is not None
    lower = offline_lower_bound(
        outcome.jobs, sites=sites, pools=pools, latency=latency, carbon=carbon, engine=engine
    )
    summary: dict[str, Any] = {
        "trace": str(args.trace),
        "fleet": str(args.fleet),
        "carbon": ", ".join(args.carbon) or "static annual table",
        "start": start.isoformat(),
        "jobs": len(trace),
        "policies": summaries,
        "lower_bound": lower,
        "assumptions": [
            "estimated durations are exact",
            "a preempted job restarts from scratch",
            "starting is instant",
            f"GPU utilisation {util:.0%} of board power, times site PUE",
            "carbon forecasts are perfect (replayed actuals)",
        ],
    }
    if "broker" in summaries and "fifo" in summaries:
        b, f = summaries["broker"], summaries["fifo"]
        summary["comparison"] = {
            "emissions_vs_fifo": _ratio(b["kgco2e"], f["kgco2e"]),
            "cost_vs_fifo": _ratio(b["cost_usd"], f["cost_usd"]),
            "emissions_vs_lower_bound": _ratio(b["kgco2e"], lower["kgco2e"]),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(
        render(summary=summary, allocation=allocation, emissions=emissions)
    )
    print(
        json.dumps(
            {
                "policies": {
                    k: {
                        m: v[m]
                        for m in (
                            "kgco2e",
                            "cost_usd",
                            "deadline_misses",
                            "preemptions",
                            "deferred_jobs",
                            "unfinished",
                        )
                    }
                    for k, v in summaries.items()
                },
                "lower_bound": {
                    k: lower[k] for k in ("kgco2e", "infeasible_jobs", "over_capacity_share")
                },
                "comparison": summary.get("comparison"),
            },
            indent=2,
        )
    )
    print(f"wrote {out / 'summary.json'} and {out / 'report.html'}", file=sys.stderr)
    return 0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None
