"""`broker simulate`: replay a trace on a fleet under several policies and write the results.

One run replays the same trace through the broker's engine and through the FIFO first-fit
carbon-blind baseline, computes the offline lower bound on emissions, and writes
`summary.json` and `report.html` (charts of GPU allocation and emissions over time).

When the fleet file's `burst:` section is enabled, its cloud sites are burst capacity
(`broker.simulation.burst`): every policy sees them empty, and the broker runs twice, without
bursting (`broker`) and with it (`broker-burst`), so one command compares the two.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import load_latency, load_settings
from broker.domain.engine import Engine
from broker.scheduling.settings import engine_settings
from broker.simulation.burst import (
    BurstOptions,
    CloudBurst,
    burst_sites,
    elastic,
    settings_figures,
)
from broker.simulation.chart import render
from broker.simulation.oracle import ReplayOracle
from broker.simulation.report import (
    burst_comparison,
    emissions_by_hour,
    offline_lower_bound,
    summarize,
)
from broker.simulation.simulator import Simulation
from broker.simulation.traces import read_trace
from carbon.replay import ReplaySource
from carbon.static import StaticTableSource
from connectors.settings import pools_from_settings, site_from_settings

POLICIES = ("broker", "fifo")  # "all" runs both
BURST_RUN = "broker-burst"


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
    bursting = burst_sites(sites, settings.burst)
    options = BurstOptions(settings=settings.burst, sites=bursting) if bursting else None
    runs: list[tuple[str, str, CloudBurst | None]] = [(p, p, None) for p in policies]
    if options is not None and "broker" in policies:
        burst = CloudBurst(
            options=options,
            limits=pools,
            sites=sites,
            engine=engine,
            latency=latency,
            carbon=carbon,
        )
        runs.insert(policies.index("broker") + 1, (BURST_RUN, "broker", burst))
    summaries: dict[str, Any] = {}
    allocation: dict[str, Any] = {}
    emissions: dict[str, Any] = {}
    outcome = None
    for label, policy, burster in runs:
        sim = Simulation(
            trace=trace,
            sites=sites,
            pools=elastic(pools, sites=bursting),
            latency=latency,
            carbon=carbon,
            engine=engine,
            start=start,
            policy=policy,
            progress=None if args.quiet else _progress(label),
            burst=burster,
            label=label,
        )
        outcome = sim.run()
        summaries[label] = summarize(outcome, carbon=carbon, utilisation=util)
        if burster is not None:
            summaries[label]["burst"] = burster.summary(end=outcome.end)
        allocation[label] = outcome.allocation
        emissions[label] = emissions_by_hour(outcome, carbon=carbon, utilisation=util)
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
    if options is not None:
        summary["assumptions"] += [
            "cloud sites are burst capacity: empty at first, each pool grows by started "
            "instances up to its configured nodes; fifo and broker never burst",
            f"a burst instance is billed from launch and usable {options.boot_delay_s:.0f} s "
            "later; bursts answer waiting work only (no demand forecast); spot is never "
            "reclaimed; an idle node's own power is not counted",
        ]
        summary["burst"] = {
            "settings": settings_figures(options),
            **(
                {"comparison": burst_comparison(summaries["broker"], summaries[BURST_RUN])}
                if BURST_RUN in summaries
                else {}
            ),
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
                "burst": summary.get("burst", {}).get("comparison"),
            },
            indent=2,
        )
    )
    print(f"wrote {out / 'summary.json'} and {out / 'report.html'}", file=sys.stderr)
    return 0


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None
