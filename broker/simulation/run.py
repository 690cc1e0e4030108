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
import csv
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import load_latency, load_settings
from broker.domain.engine import Engine
from broker.domain.errors import BrokerError
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
    unrunnable_jobs,
)
from broker.simulation.simulator import Simulation
from broker.simulation.traces import TraceJob, read_trace
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


class InputError(BrokerError):
    """A file or flag given to `broker simulate` cannot be used; the message says which."""


def parse_start(text: str) -> datetime:
    """`--start` as an aware UTC datetime; a time without a UTC offset is refused, not
    read as the machine's local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"--start {text!r} is not an RFC 3339 time such as 2022-03-07T00:00:00+00:00"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InputError(
            f"--start {text!r} has no UTC offset: add one, e.g. {moment.isoformat()}+00:00"
        )
    return moment.astimezone(UTC)


def load_trace(path: Path) -> list[TraceJob]:
    """The trace, with a file that is not UTF-8 CSV text an `InputError` too."""
    try:
        return read_trace(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"trace {path} is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise InputError(f"trace {path} is not valid CSV: {exc}") from exc


def load_carbon(paths: Sequence[str]) -> ReplaySource | None:
    """The replayed hourly series, or None; unreadable or malformed files are `InputError`s."""
    if not paths:
        return None
    try:
        return ReplaySource.from_csv(paths, wrap=True)
    except OSError as exc:
        raise InputError(
            f"cannot read carbon file {exc.filename or ', '.join(paths)}: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"carbon file is not UTF-8 text: {', '.join(paths)}") from exc
    except (ValueError, csv.Error) as exc:
        raise InputError(f"carbon file: {exc}") from exc


def warn_unrunnable(found: dict[str, Any], *, total: int) -> None:
    """A few lines on stderr: how many jobs no pool can ever take, why, and examples."""
    if not found["count"]:
        return
    print(
        f"broker: warning: {found['count']:,} of {total:,} jobs can never run on this fleet; "
        "they stay unfinished and the comparison is partial",
        file=sys.stderr,
    )
    for reason, entry in found["by_reason"].items():
        ids = ", ".join(entry["job_ids"])
        print(f"  {reason}: {entry['count']:,} (e.g. {ids}: {entry['example']})", file=sys.stderr)


def warn_state(label: str, check: dict[str, Any]) -> None:
    """The replay's own ledger check failed: a bug in the simulator, not in the trace."""
    if check["ok"]:
        return
    print(
        f"broker: warning: {label}: {check['violation_count']} ledger violation(s), e.g. "
        f"{check['violations'][0]} (see final_state_check)",
        file=sys.stderr,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    start = parse_start(args.start)
    settings = load_settings(Path(args.fleet), env={})
    rows = load_trace(Path(args.trace))
    trace = [t for t in rows if not t.cpu_only]  # CPU-only rows: background load (below)
    sites = [site_from_settings(s) for s in settings.sites]
    pools = [p for s in settings.sites for p in pools_from_settings(s)]
    latency = load_latency(settings)
    replay = load_carbon(args.carbon)
    carbon = ReplayOracle(replay=replay, static=StaticTableSource.default())
    scheduler = settings.scheduler
    if getattr(args, "gpu_performance", False):  # each job runs for its time on its model
        scheduler = scheduler.model_copy(update={"gpu_performance": True})
    engine = Engine(engine_settings(scheduler, power=settings.power_table()))
    unrunnable = unrunnable_jobs(
        trace, sites=sites, pools=pools, latency=latency, engine=engine, start=start
    )
    warn_unrunnable(unrunnable, total=len(trace))
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
            trace=rows,
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
        summaries[label] = summarize(
            outcome, carbon=carbon, utilisation=util, power_kw=engine.settings.power_kw
        )
        warn_state(label, summaries[label]["final_state_check"])
        if burster is not None:
            summaries[label]["burst"] = burster.summary(end=outcome.end)
        allocation[label] = outcome.allocation
        emissions[label] = emissions_by_hour(
            outcome, carbon=carbon, utilisation=util, power_kw=engine.settings.power_kw
        )
    assert outcome is not None
    lower = offline_lower_bound(
        outcome.jobs, sites=sites, pools=pools, latency=latency, carbon=carbon, engine=engine
    )
    summary: dict[str, Any] = {
        "trace": str(args.trace),
        "fleet": str(args.fleet),
        "carbon": ", ".join(args.carbon) or "static annual table",
        "start": start.isoformat(),
        "jobs": len(rows),
        "cpu_only_jobs": len(rows) - len(trace),
        "gpu_performance": scheduler.gpu_performance,
        "unrunnable_jobs": unrunnable,
        "policies": summaries,
        "lower_bound": lower,
        "assumptions": [
            "estimated durations are exact",
            "a preempted job restarts from scratch",
            "starting is instant",
            f"GPU utilisation {util:.0%} of board power, times site PUE",
            "carbon forecasts are perfect (replayed actuals)",
            "CPU and memory are not accounted per node: CPU-only jobs are not replayed, and "
            "final_state_check covers GPUs only (CPU and memory over-commit will be checked "
            "once the ledger tracks them)",
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
            **_partial(unrunnable=unrunnable["count"], summaries=summaries),
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


def _partial(*, unrunnable: int, summaries: dict[str, Any]) -> dict[str, Any]:
    """`partial` and a note when some jobs never ran: each policy's totals then leave out
    different work, so their ratios compare unequal sets of jobs."""
    unfinished = {k: v["unfinished"] for k, v in summaries.items() if v["unfinished"]}
    if not unrunnable and not unfinished:
        return {"partial": False}
    parts = []
    if unrunnable:
        parts.append(f"{unrunnable} job(s) no pool can ever run (see unrunnable_jobs)")
    if unfinished:
        parts.append(
            "unfinished jobs: " + ", ".join(f"{k} {n}" for k, n in sorted(unfinished.items()))
        )
    return {
        "partial": True,
        "note": "ratios cover only the work each policy finished; " + "; ".join(parts),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None
