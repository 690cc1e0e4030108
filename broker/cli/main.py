"""Entry point of the `broker` command: subcommands and their flags."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from broker import __version__
from broker.domain.errors import BrokerError


def build_parser() -> argparse.ArgumentParser:
    from collections.abc import Callable

    from broker.cli import client, services, serving_replay

    def lazy(module_name: str, name: str) -> Callable[[argparse.Namespace], int]:
        """A command imported when it runs: client commands skip SQLAlchemy and the engine."""

        def run(args: argparse.Namespace) -> int:
            func: Callable[[argparse.Namespace], int] = getattr(
                importlib.import_module(module_name), name
            )
            return func(args)

        return run

    def server(name: str) -> Callable[[argparse.Namespace], int]:
        return lazy("broker.cli.server", name)

    p = argparse.ArgumentParser(prog="broker", description="Carbon-aware GPU federation broker.")
    p.add_argument("--version", action="version", version=f"broker {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def local(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="YAML config (default: $BROKER_CONFIG, else the demo)")
        parser.add_argument("--database-url", help="overrides the config and $BROKER_DATABASE_URL")

    serve = sub.add_parser("serve", help="run the broker (API + scheduler)")
    local(serve)
    serve.add_argument("--host", help="listen address (default from config)")
    serve.add_argument("--port", type=int, help="listen port (default from config)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--role",
        default="all",
        choices=["all", "api", "scheduler"],
        help="api: the HTTP API only; scheduler: passes, sites and duties; all: both (default)",
    )
    serve.set_defaults(func=server("cmd_serve"))

    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    up = db.add_parser("upgrade", help="migrate the schema to the newest revision")
    local(up)
    up.set_defaults(func=server("cmd_db_upgrade"))

    chk = sub.add_parser("check", help="check each configured site's credentials and permissions")
    local(chk)
    chk.add_argument("--site", action="append", default=[], help="only this site (repeatable)")
    chk.add_argument("--json", action="store_true", help="print JSON instead of a table")
    chk.set_defaults(func=server("cmd_check"))

    token = sub.add_parser("token", help="API token helpers").add_subparsers(
        dest="token_command", required=True, metavar="ACTION"
    )
    token.add_parser("hash", help="hash a token read from stdin").set_defaults(
        func=server("cmd_token_hash")
    )
    token.add_parser("new", help="make a random token and its hash").set_defaults(
        func=server("cmd_token_new")
    )

    sim = sub.add_parser("simulate", help="replay a job trace on a fleet in virtual time")
    sim.add_argument("--trace", required=True, help="canonical trace CSV (docs/traces.md)")
    sim.add_argument("--fleet", required=True, help="fleet YAML (config/fleets/)")
    sim.add_argument(
        "--carbon",
        action="append",
        default=[],
        help="hourly intensity CSV to replay (repeatable); other zones use the static table",
    )
    sim.add_argument(
        "--start",
        default="2022-03-07T00:00:00+00:00",
        help="the trace's time zero on the carbon series' clock (RFC 3339)",
    )
    sim.add_argument("--policy", choices=["broker", "fifo", "all"], default="all")
    sim.add_argument("--out", default="simulation-out", help="folder for summary.json, report.html")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument(
        "--gpu-performance",
        action="store_true",
        help="run times by GPU model (scheduler.gpu_performance; docs/performance.md)",
    )
    sim.set_defaults(func=lazy("broker.simulation.run", "cmd_simulate"))
    serving_replay.add_command(sub)

    client.add_commands(sub)
    services.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokerError as exc:
        # A BrokerError that reaches here stopped the command before it could do its work:
        # a config, a fleet, a trace or a carbon file, or a flag. API problems are the
        # client's to print (exit 1). One line, like argparse's own usage errors (exit 2).
        print(f"broker: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def one_line(message: str) -> str:
    """A multi-line error (settings list one problem a line) as one line: `head: a; b`."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else "error"
    head, rest = lines[0], "; ".join(lines[1:])
    return f"{head} {rest}" if head.endswith(":") else f"{head}: {rest}"


if __name__ == "__main__":
    sys.exit(main())

_ = os  # the client reads BROKER_URL and BROKER_TOKEN from the environment
