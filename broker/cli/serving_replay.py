"""`broker simulate-serving`'s flags; the command itself is imported when it runs.

A sibling of `broker simulate` (docs/serving.md): the replay pulls in scikit-learn and the
engine, which the other subcommands need not load.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from broker.simulation.serving.rates import DEFAULT_LLM

__all__ = ["add_command"]

POLICIES = ("static-peak", "reactive", "reactive+predictive")  # `PolicyKind`'s values


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module("broker.simulation.serving.command")
    code: int = module.cmd_simulate_serving(args)
    return code


def add_command(sub: Any) -> None:
    """Register `simulate-serving` on the `broker` subparsers (`sub`)."""
    p = sub.add_parser(
        "simulate-serving",
        help="replay a request trace on an autoscaled inference service (docs/serving.md)",
    )
    p.add_argument("--trace", required=True, help="request CSV (TIMESTAMP, ContextTokens, …)")
    p.add_argument("--fleet", required=True, help="fleet YAML: the pool's price, PUE and grid")
    p.add_argument("--site", help="the site to run on (default: the first with the GPU model)")
    p.add_argument("--gpu-model", default="H100", help="GPU model of a replica (default H100)")
    p.add_argument("--llm", default=DEFAULT_LLM, help=f"model served (default {DEFAULT_LLM})")
    p.add_argument("--prefill-rate", type=float, help="prompt tokens/s per stream (override)")
    p.add_argument("--decode-rate", type=float, help="generated tokens/s per stream (override)")
    p.add_argument("--max-batch", type=int, help="requests one replica serves at once")
    p.add_argument("--gpus-per-replica", type=int, help="GPUs per replica")
    p.add_argument("--startup-s", type=float, default=90.0, help="replica start-up (default 90)")
    p.add_argument("--slo-ms", type=float, help="end-to-end latency SLO in ms (absolute)")
    p.add_argument(
        "--slo-slowdown",
        type=float,
        default=2.0,
        help="without --slo-ms: SLO = this × the request's own service time (default 2)",
    )
    p.add_argument("--min-replicas", type=int, default=1, help="for the non-zero variants")
    p.add_argument("--max-replicas", type=int, help="default: twice the static peak")
    p.add_argument(
        "--scale-to-zero-after-s",
        type=float,
        default=300.0,
        help="idle period before zero (default 300, as a service's); 0: at once",
    )
    p.add_argument("--scale-down-delay-s", type=float, default=120.0)
    p.add_argument(
        "--history-days",
        type=int,
        default=7,
        help="days of SYNTHETIC load before the trace for the forecaster (0: none)",
    )
    p.add_argument(
        "--overlay-days",
        type=int,
        default=0,
        help="replay this many days of the trace on an assumed daily curve: SYNTHETIC "
        "(docs/serving.md); 0 (default): the trace as it is",
    )
    p.add_argument(
        "--overlay-trough",
        type=float,
        default=0.3,
        help="the overlay's lowest hour (03:00 UTC) as a share of its busiest (default 0.3)",
    )
    p.add_argument(
        "--overlay-hours",
        help="START-END, UTC hours: the overlay keeps only requests between them (idle nights)",
    )
    p.add_argument(
        "--policy",
        action="append",
        choices=POLICIES,
        help="repeatable; default all three, each autoscaled one also with scale to zero",
    )
    p.add_argument("--carbon", action="append", default=[], help="hourly intensity CSV")
    p.add_argument(
        "--start",
        help="the trace's first minute on the carbon series' clock (default: its own time)",
    )
    p.add_argument("--out", default="serving-out", help="folder for summary.json, summary.md")
    p.set_defaults(func=_run)
