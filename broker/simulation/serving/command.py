"""`broker simulate-serving`: replay a request trace on one inference service, per policy.

The command line is `broker.cli.serving_replay`; this is what it runs (as `broker simulate`
runs `broker.simulation.run`).

Reads the trace (`broker.simulation.serving.requests`), the serving rates of a GPU model
(measured, or given by flags), the pool's price and the site's PUE and grid from a fleet
file, and the zone's hourly intensity from `--carbon` files (else the static annual table),
then replays each policy (`broker.simulation.serving.replay`) and writes `summary.json`
and `summary.md` to `--out`. Bad input is a `BrokerError`: `broker: <reason>`, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.config import load_settings
from broker.domain.errors import BrokerError
from broker.simulation.oracle import ReplayOracle
from broker.simulation.run import load_carbon, parse_start
from broker.simulation.serving.figures import Pricing, Slo, summarize, targets
from broker.simulation.serving.rates import ServingRates, measured_rates
from broker.simulation.serving.replay import PolicyKind, ReplaySettings, Variant, replay
from broker.simulation.serving.requests import (
    RequestTrace,
    daily_overlay,
    offered_concurrency,
    read_requests,
    synthetic_history,
)
from carbon.static import StaticTableSource

__all__ = ["ServingInputError", "cmd_simulate_serving"]

_COLUMNS = (
    ("policy", "{}"),
    ("within_slo", "{:.2%}"),
    ("latency_p50_s", "{:.1f}"),
    ("latency_p99_s", "{:.1f}"),
    ("replica_hours", "{:.2f}"),
    ("gpu_hours", "{:.2f}"),
    ("cost_usd", "{:.2f}"),
    ("kgco2e", "{:.3f}"),
    ("cold_starts", "{}"),
    ("cold_start_mean_s", "{}"),
    ("idle_replica_hours", "{:.3f}"),
)


class ServingInputError(BrokerError):
    """A flag or file given to `broker simulate-serving` cannot be used."""


def _rates(args: argparse.Namespace) -> ServingRates:
    flags = (args.prefill_rate, args.decode_rate, args.max_batch, args.gpus_per_replica)
    if all(f is not None for f in flags):
        return ServingRates(
            gpu_model=args.gpu_model,
            prefill_tok_s=args.prefill_rate,
            decode_tok_s=args.decode_rate,
            max_batch=args.max_batch,
            gpus_per_replica=args.gpus_per_replica,
            source="given on the command line",
        )
    measured = measured_rates(gpu_model=args.gpu_model, llm=args.llm)
    return ServingRates(
        gpu_model=measured.gpu_model,
        prefill_tok_s=args.prefill_rate or measured.prefill_tok_s,
        decode_tok_s=args.decode_rate or measured.decode_tok_s,
        max_batch=args.max_batch or measured.max_batch,
        gpus_per_replica=args.gpus_per_replica or measured.gpus_per_replica,
        source=measured.source + ("" if not any(flags) else ", with flags overriding"),
    )


def _pricing(args: argparse.Namespace, *, trace: RequestTrace) -> Pricing:
    settings = load_settings(Path(args.fleet), env={})
    sites = [
        (s, p)
        for s in settings.sites
        for p in s.pools
        if p.gpu_model == args.gpu_model and (args.site is None or s.name == args.site)
    ]
    if not sites:
        where = f"site {args.site!r}" if args.site else f"fleet {args.fleet}"
        raise ServingInputError(f"{where} has no pool of {args.gpu_model}")
    site, pool = sites[0]
    power = settings.power_table()[args.gpu_model].board_power_w / 1000
    offset = timedelta(0)
    if args.start:
        offset = parse_start(args.start) - trace.start
    oracle = ReplayOracle(replay=load_carbon(args.carbon), static=StaticTableSource.default())
    hourly: dict[datetime, float] = {}
    first = trace.start.replace(minute=0, second=0, microsecond=0)
    for h in range(trace.minutes // 60 + 3):  # the replay runs on a little past the trace
        hour = first + timedelta(hours=h)
        at = (hour + offset).replace(minute=0, second=0, microsecond=0)
        rows = oracle.hourly(site.grid_zone, start=at, end=at + timedelta(hours=1))
        if rows:
            hourly[hour] = rows[0][1]
    if not hourly:
        raise ServingInputError(f"no grid intensity for zone {site.grid_zone}")
    return Pricing(
        site=site.name,
        grid_zone=site.grid_zone,
        price_per_gpu_hour=pool.price_on_demand,
        gpu_power_kw=power,
        utilisation=settings.scheduler.gpu_utilisation,
        pue=site.pue,
        hourly_gco2_per_kwh=hourly,
        fallback_gco2_per_kwh=sum(hourly.values()) / len(hourly),
    )


def _hours(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        lo, hi = (int(x) for x in text.split("-"))
    except ValueError:
        raise ServingInputError(
            f"--overlay-hours {text!r}: expected START-END, e.g. 8-20"
        ) from None
    return lo, hi


def _variants(chosen: list[str] | None) -> list[Variant]:
    kinds = [PolicyKind(c) for c in chosen] if chosen else list(PolicyKind)
    out = []
    for kind in dict.fromkeys(kinds):
        out.append(Variant(kind=kind))
        if kind is not PolicyKind.STATIC_PEAK:
            out.append(Variant(kind=kind, scale_to_zero=True))
    return out


def _table(figures: dict[str, dict[str, Any]]) -> str:
    head = "| " + " | ".join(name for name, _ in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(_COLUMNS)]
    for policy, f in figures.items():
        cells = [policy] + [
            "–" if f[name] is None else fmt.format(f[name]) for name, fmt in _COLUMNS[1:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_simulate_serving(args: argparse.Namespace) -> int:
    if (args.slo_ms is not None and args.slo_ms <= 0) or args.slo_slowdown <= 0:
        raise ServingInputError("--slo-ms and --slo-slowdown must be > 0")
    if args.startup_s < 0 or args.history_days < 0 or args.overlay_days < 0:
        raise ServingInputError("--startup-s, --history-days and --overlay-days must be ≥ 0")
    start = parse_start(args.start) if args.start else None
    trace = read_requests(Path(args.trace), start=start)
    hour_trace = trace
    overlay = None
    hours = _hours(args.overlay_hours)
    if args.overlay_days:
        trace = daily_overlay(
            trace, days=args.overlay_days, trough=args.overlay_trough, active_hours=hours
        )
        overlay = (
            f"SYNTHETIC: {args.overlay_days} days of the trace's hour on an assumed daily cosine"
            f" (trough {args.overlay_trough} at 03:00 UTC"
            + (f", requests only {hours[0]:02d}–{hours[1]:02d} UTC" if hours else "")
            + "; docs/serving.md), not data"
        )
    elif args.overlay_hours:
        raise ServingInputError("--overlay-hours needs --overlay-days")
    rates = _rates(args)
    pricing = _pricing(args, trace=trace)
    slo = Slo(
        slowdown=args.slo_slowdown,
        absolute_s=None if args.slo_ms is None else args.slo_ms / 1000,
    )
    offered = offered_concurrency(hour_trace, rates=rates)
    history = synthetic_history(
        offered,
        start=trace.start,
        days=args.history_days,
        trough=args.overlay_trough if args.overlay_days else 0.3,
        active_hours=hours if args.overlay_days else None,
    )
    try:
        settings = ReplaySettings(
            rates=rates,
            startup_s=args.startup_s,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            scale_down_delay_s=args.scale_down_delay_s,
            scale_to_zero_after_s=args.scale_to_zero_after_s,
            history=tuple(history),
        )
        figures = {
            v.name: summarize(
                replay(trace, settings=settings, variant=v),
                trace=trace,
                rates=rates,
                slo=slo,
                pricing=pricing,
            )
            for v in _variants(args.policy)
        }
    except ValueError as exc:  # a policy the autoscaler refuses (bounds, windows)
        raise ServingInputError(str(exc)) from exc
    summary = {
        "trace": str(args.trace),
        "trace_start": trace.start.isoformat(),
        "requests": len(trace.requests),
        "minutes": trace.minutes,
        "overlay": overlay or "none: the trace as recorded",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "serving_model": {
            "gpu_model": rates.gpu_model,
            "llm": args.llm,
            "prefill_tok_s_per_stream": round(rates.prefill_tok_s, 2),
            "decode_tok_s_per_stream": round(rates.decode_tok_s, 2),
            "max_batch": rates.max_batch,
            "gpus_per_replica": rates.gpus_per_replica,
            "startup_s": args.startup_s,
            "source": rates.source,
        },
        "slo": slo.describe(),
        "site": {
            "name": pricing.site,
            "grid_zone": pricing.grid_zone,
            "price_per_gpu_hour": pricing.price_per_gpu_hour,
            "pue": pricing.pue,
            "gpu_power_kw": pricing.gpu_power_kw,
            "utilisation": pricing.utilisation,
            "carbon": ", ".join(args.carbon) or "static annual table",
        },
        "history": (
            f"{args.history_days} days SYNTHETIC (the trace's minutes, rotated per hour, on "
            "an assumed daily cosine, shaped as the overlay when there is one; "
            "docs/serving.md), for the forecaster only"
            if args.history_days
            else "none: the forecaster has under 120 minutes and the predictive part is off"
        ),
        "policies": figures,
        "targets": targets(figures),
    }
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        table = _table(figures)
        (out / "summary.md").write_text(
            f"# Serving replay of {args.trace}\n\n{slo.describe()}; {rates.source}.\n\n"
            f"Overlay: {summary['overlay']}.\n\n"
            f"{table}\n\nTargets:\n\n```json\n{json.dumps(summary['targets'], indent=2)}\n```\n"
        )
    except OSError as exc:
        raise ServingInputError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    print(table)
    print(json.dumps(summary["targets"], indent=2))
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}", file=sys.stderr)
    return 0
