"""Commands that talk to a running broker over its HTTP API.

Each command is a coroutine over `Api`; `_cli` runs it and is the one place where errors
become a message on stderr and an exit code. The errors, like httpx's `_exceptions.py`:

    CliError             a message and an exit code
    ├── UsageError       2: unreadable file, invalid YAML, malformed --url
    ├── TransportError   1: no usable answer (refused, DNS, timeout, not JSON)
    └── ProblemError     1: the API answered an RFC 9457 problem (4xx/5xx)

Exit codes: 0 done, 1 the broker said no (or a watched job failed), 2 bad input, 3 `jobs
watch` timed out. The token goes only into the Authorization header; messages are built
from the URL and the API's answer, and error output is passed through the shared redactor
(`redaction`) anyway, with the token registered, in case a proxy echoes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml
from multidict import CIMultiDict
from yarl import URL

from broker import __version__
from broker.cli import tables
from redaction import Redactor

DEFAULT_URL = "http://127.0.0.1:8080"
REQUEST_TIMEOUT_S = 30.0
TERMINAL = {"succeeded": 0, "failed": 1, "cancelled": 1}  # state → `jobs watch` exit code

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3

Json = dict[str, Any]


class CliError(Exception):
    exit_code = EXIT_FAILED


class UsageError(CliError):
    exit_code = EXIT_USAGE


class TransportError(CliError):
    pass


class ProblemError(CliError):
    def __init__(self, problem: Json) -> None:
        super().__init__(f"{problem.get('title', 'error')}: {problem.get('detail', '')}")
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Target:
    url: URL
    token: str | None


@dataclass(frozen=True, slots=True)
class Reply:
    data: Any
    headers: Mapping[str, str]


class Api:
    """One broker: JSON in, JSON out, non-2xx answers raised as `ProblemError`."""

    def __init__(self, session: aiohttp.ClientSession, target: Target) -> None:
        self._session = session
        self._target = target

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Reply:
        """With `raw`, a 2xx answer's body comes back as text (CSV, HTML), not parsed."""
        url = self._target.url.with_path(self._target.url.path.rstrip("/") + path, encoded=True)
        data = None if body is None else _to_json(body)
        send = {"Content-Type": "application/json", **(headers or {})} if data else headers
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=send
            ) as resp:
                raw_body = await resp.read()
                status, reason, answer = resp.status, resp.reason or "", CIMultiDict(resp.headers)
        except aiohttp.ClientConnectorError as exc:
            errno = exc.os_error.errno
            why = os.strerror(errno) if errno and errno > 0 else exc.os_error.strerror
            raise TransportError(
                f"cannot connect to the broker at {self._target.url}: {why}"
            ) from None
        except TimeoutError:
            raise TransportError(
                f"no answer from {self._target.url} within {REQUEST_TIMEOUT_S:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"the request to {self._target.url} failed: {type(exc).__name__}"
            ) from None
        try:
            decoded = json.loads(raw_body) if raw_body else None
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if status >= 400:
            if isinstance(decoded, dict) and "title" in decoded:
                raise ProblemError(decoded)
            raise ProblemError(
                {
                    "type": "about:blank",
                    "title": reason or f"HTTP {status}",
                    "status": status,
                    "detail": f"HTTP {status} from {url}",
                }
            )
        if raw:
            return Reply(data=raw_body.decode("utf-8", errors="replace"), headers=answer)
        if decoded is None:
            raise TransportError(f"{url} did not answer JSON (HTTP {status}); is --url a broker?")
        return Reply(data=decoded, headers=answer)


def _to_json(body: Json) -> str:
    """YAML may hold timestamps (a `deadline`); the API wants them as RFC 3339 strings."""

    def default(value: object) -> str:
        if isinstance(value, date | datetime):
            return value.isoformat()
        raise TypeError(f"a {type(value).__name__} cannot be sent as JSON")

    try:
        return json.dumps(body, default=default)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"the job cannot be sent: {exc}") from None


def read_body(source: str) -> Json:
    """One job from a YAML or JSON file, or stdin for `-`."""
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise UsageError(f"{name} is not valid YAML or JSON: {problem}{where}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{name} must hold one job: a mapping with name, priority, kind, ...")
    return data


def _target(args: argparse.Namespace) -> Target:
    raw: str = args.url or os.environ.get("BROKER_URL") or DEFAULT_URL
    try:
        url = URL(raw)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--url must look like http://host:port, not {raw!r}")
    if url.user is not None or url.password is not None:
        raise UsageError("put credentials in BROKER_TOKEN, not in the URL")
    token: str | None = args.token or os.environ.get("BROKER_TOKEN") or None
    return Target(url=url, token=token)


Command = Callable[["Api", argparse.Namespace], Awaitable[int]]


def _cli(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run `command` against the broker; the boundary where errors become exit codes."""

    def run(args: argparse.Namespace) -> int:
        token: str | None = None
        try:
            target = _target(args)
            token = target.token
            return asyncio.run(_session(target, command=command, args=args))
        except CliError as exc:
            _report(exc, as_json=args.as_json, token=token)
            return exc.exit_code
        except BrokenPipeError:  # `broker jobs list | head`: the reader has gone, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED

    return run


async def _session(target: Target, *, command: Command, args: argparse.Namespace) -> int:
    headers = {"Accept": "application/json", "User-Agent": f"broker-cli/{__version__}"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        return await command(Api(session, target), args)


def _report(exc: CliError, *, as_json: bool, token: str | None) -> None:
    redactor = Redactor()  # the token, and any secret shape a proxy or the broker echoed
    redactor.register(token)
    scrub = redactor.redact

    lines = [f"broker: {exc}"]
    if isinstance(exc, ProblemError):
        if as_json:
            print(scrub(pretty(exc.problem)))
        lines += [
            f"  {e.get('field', '?')}: {e.get('message', '')}"
            for e in exc.problem.get("errors") or []
            if isinstance(e, dict)
        ]
        if exc.problem.get("status") == 401 and not token:
            lines.append("  (no token given: set BROKER_TOKEN or pass --token)")
    print(scrub("\n".join(lines)), file=sys.stderr)


def pretty(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _job_path(job_id: str) -> str:
    return "/v1/jobs/" + quote(job_id, safe="")


async def _submit(api: Api, args: argparse.Namespace) -> int:
    body = read_body(args.file)  # before any I/O: nothing else is running yet
    key: str | None = args.idempotency_key
    reply = await api.call(
        "POST", "/v1/jobs", body=body, headers={"Idempotency-Key": key} if key else None
    )
    print(pretty(reply.data) if args.as_json else tables.job_summary(reply.data))
    if reply.headers.get("Idempotent-Replayed") == "true":
        print(
            f"broker: Idempotency-Key {key!r} was used before: this is the job it created",
            file=sys.stderr,
        )
    return EXIT_OK


async def _list(api: Api, args: argparse.Namespace) -> int:
    params = {
        name: value
        for name, value in (("state", args.state), ("priority", args.priority), ("kind", args.kind))
        if value
    }
    params["limit"] = str(args.limit)
    items: list[Json] = []
    seen: set[str] = set()
    while True:
        page = (await api.call("GET", "/v1/jobs", params=params)).data
        items.extend(page["items"])
        cursor: str | None = page["next_cursor"]
        if not args.all or cursor is None:
            break
        if cursor in seen:
            raise TransportError("the broker returned the same cursor twice; stopping")
        seen.add(cursor)
        params["cursor"] = cursor
    if args.as_json:
        print(pretty(page if not args.all else {"items": items, "next_cursor": None}))
    else:
        print(tables.job_list(items, now=datetime.now(UTC)) if items else "no jobs")
    if cursor is not None and not args.all:
        print(
            f"broker: more jobs than --limit {args.limit}; add --all to list them all",
            file=sys.stderr,
        )
    return EXIT_OK


async def _show(api: Api, args: argparse.Namespace) -> int:
    job = (await api.call("GET", _job_path(args.id))).data
    print(pretty(job) if args.as_json else tables.job_detail(job))
    return EXIT_OK


async def _job_explain(api: Api, args: argparse.Namespace) -> int:
    data = (await api.call("GET", _job_path(args.id) + "/explain")).data
    print(pretty(data) if args.as_json else tables.job_explanation(data))
    return EXIT_OK


async def _cancel(api: Api, args: argparse.Namespace) -> int:
    job = (await api.call("DELETE", _job_path(args.id))).data
    print(pretty(job) if args.as_json else tables.job_summary(job))
    return EXIT_OK


async def _watch(api: Api, args: argparse.Namespace) -> int:
    """Poll until the job ends, printing each event once (as a JSON line with --json)."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    printed = 0
    while True:
        job = (await api.call("GET", _job_path(args.id))).data
        events = job.get("events") or []
        for event in events[printed:]:
            line = (
                json.dumps(event, ensure_ascii=False) if args.as_json else tables.event_line(event)
            )
            print(line, flush=True)
        printed = len(events)
        state: str = job["state"]
        if state in TERMINAL:
            if state != "succeeded":
                print(f"broker: job {job['id']} {state} ({job['state_reason']})", file=sys.stderr)
            return TERMINAL[state]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            print(
                f"broker: job {job['id']} is still {state} after {args.timeout:g}s", file=sys.stderr
            )
            return EXIT_TIMEOUT
        await asyncio.sleep(args.interval if left is None else min(args.interval, left))


async def _inventory(api: Api, args: argparse.Namespace) -> int:
    data = (await api.call("GET", "/v1/inventory")).data
    print(pretty(data) if args.as_json else tables.inventory(data["items"]))
    return EXIT_OK


async def _sites(api: Api, args: argparse.Namespace) -> int:
    data = (await api.call("GET", "/v1/sites")).data
    print(pretty(data) if args.as_json else tables.sites(data["items"]))
    return EXIT_OK


async def _sustainability(api: Api, args: argparse.Namespace) -> int:
    params = {"group_by": args.group_by, "format": args.format}
    params |= {k: v for k, v in (("from", args.start), ("to", args.end)) if v}
    if args.format == "json" and not args.output:
        data = (await api.call("GET", "/v1/reports/sustainability", params=params)).data
        print(pretty(data) if args.as_json else tables.sustainability(data))
        return EXIT_OK
    text = (await api.call("GET", "/v1/reports/sustainability", params=params, raw=True)).data
    if args.output:
        await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return EXIT_OK


async def _explain(api: Api, args: argparse.Namespace) -> int:
    body = read_body(args.file)
    data = (await api.call("POST", "/v1/placements:explain", body=body)).data
    print(pretty(data) if args.as_json else tables.explanation(data))
    return EXIT_OK


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def common_options() -> argparse.ArgumentParser:
    """The options every command that talks to a broker takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the broker (default: $BROKER_URL, else {DEFAULT_URL})")
    common.add_argument(
        "--token",
        help="API token (default: $BROKER_TOKEN, which is safer: "
        "arguments are visible to other local users)",
    )
    common.add_argument(
        "--json",
        dest="as_json",
        action="store_true",
        help="print the API's JSON instead of a table",
    )
    return common


def add_command(
    parent: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    run: Command,
) -> argparse.ArgumentParser:
    """A subcommand running `run` against the broker, with the common options."""
    p = parent.add_parser(name, help=summary, description=summary, parents=[common_options()])
    p.set_defaults(func=_cli(run))
    return p


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = add_command
    body_help = "a job as YAML or JSON, or - for stdin"
    p = command(sub, "submit", summary="submit a job", run=_submit)
    p.add_argument("file", metavar="FILE", help=body_help)
    p.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="retrying with the same key returns the same job instead of a new one",
    )

    jobs = sub.add_parser("jobs", help="list, show, cancel and watch jobs").add_subparsers(
        dest="jobs_command", required=True, metavar="ACTION"
    )
    p = command(jobs, "list", summary="list jobs, newest first", run=_list)
    p.add_argument("--state", help="only these states (comma list: pending,running,...)")
    p.add_argument("--priority", help="only these priorities (comma list: P1,P2,P3)")
    p.add_argument("--kind", help="only these kinds (comma list: inference,training,experiment)")
    p.add_argument("--limit", type=int, default=50, help="jobs per page, 1-500 (default 50)")
    p.add_argument("--all", action="store_true", help="follow the pages to the end")
    for name, summary, run in (
        ("show", "a job with its placement, events and why it waits", _show),
        ("explain", "what the scheduler would do with a waiting job now, and why", _job_explain),
        ("cancel", "cancel a job", _cancel),
    ):
        command(jobs, name, summary=summary, run=run).add_argument("id", metavar="ID")
    p = command(
        jobs,
        "watch",
        summary="print a job's events until it ends (exit 0 if it "
        "succeeded, 1 if it failed or was cancelled, 3 on --timeout)",
        run=_watch,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--interval", type=seconds, default=2.0, help="seconds between polls")
    p.add_argument("--timeout", type=seconds, default=None, help="give up after this long")

    command(
        sub, "inventory", summary="GPU pools: capacity, price, carbon (operators)", run=_inventory
    )
    command(sub, "sites", summary="the federated sites and their health", run=_sites)
    p = command(
        sub,
        "report",
        summary="sustainability report: energy, emissions, avoided emissions, cost",
        run=_sustainability,
    )
    p.add_argument("--from", dest="start", help="start, RFC 3339 (default: 30 days before --to)")
    p.add_argument("--to", dest="end", help="end, RFC 3339 (default: now)")
    p.add_argument(
        "--group-by", choices=["tenant", "site", "tier", "day", "service"], default="tenant"
    )
    p.add_argument("--format", choices=["json", "csv", "html"], default="json")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    p = command(
        sub, "explain", summary="rank the fleet for a job without submitting it", run=_explain
    )
    p.add_argument("file", metavar="FILE", help=body_help)
