"""`broker services`: create, list, show, update, delete and watch inference services.

The same conventions as `broker jobs` (`broker.cli.client`): a body from a YAML or JSON
file, tables by default and the API's JSON with `--json`, problems as `broker: <reason>`.
`update` sends its file as a JSON merge patch of the service (only the fields to change).
`watch` prints each new autoscaler decision and replica change until the service is gone
or `--timeout` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

from broker.cli import tables
from broker.cli.client import (
    EXIT_OK,
    EXIT_TIMEOUT,
    Api,
    Command,
    ProblemError,
    add_command,
    pretty,
    read_body,
    seconds,
)

Json = dict[str, Any]


def _path(service_id: str) -> str:
    return "/v1/services/" + quote(service_id, safe="")


def summary(svc: Json) -> str:
    return tables.table(
        ["ID", "NAME", "PRIORITY", "STATE", "GEN", "DESIRED", "READY"],
        [
            [
                svc["id"],
                svc["spec"]["name"],
                svc["spec"]["priority"],
                svc["state"],
                svc["generation"],
                svc["desired_replicas"],
                svc["ready_replicas"],
            ]
        ],
        right=frozenset({4, 5, 6}),
    )


def service_list(items: list[Json]) -> str:
    return tables.table(
        ["ID", "NAME", "TENANT", "PRIORITY", "STATE", "DESIRED", "READY", "MIN-MAX"],
        [
            [
                s["id"],
                s["spec"]["name"],
                s["tenant"],
                s["spec"]["priority"],
                s["state"],
                s["desired_replicas"],
                s["ready_replicas"],
                f"{s['spec']['min_replicas']}-{s['spec']['max_replicas']}",
            ]
            for s in items
        ],
        right=frozenset({5, 6}),
    )


def detail(svc: Json) -> str:
    parts = [summary(svc)]
    load = svc.get("load")
    if load:
        parts.append(f"load: {load['value']:g} {load['metric']} at {load['at']}")
    replicas = svc.get("replicas") or []
    if replicas:
        parts.append(
            tables.table(
                ["REPLICA", "GEN", "STATE", "READY", "SITE", "POOL"],
                [
                    [
                        r["job_id"],
                        r["generation"],
                        r["state"],
                        "yes" if r["ready"] else "no",
                        r["site"] or tables.NONE,
                        r["pool_id"] or tables.NONE,
                    ]
                    for r in replicas
                ],
            )
        )
    decisions = svc.get("decisions") or []
    if decisions:
        parts.append("decisions (newest first):")
        parts += [decision_line(d) for d in decisions]
    return "\n\n".join(parts[:1]) + ("\n\n" + "\n".join(parts[1:]) if parts[1:] else "")


def decision_line(d: Json) -> str:
    return f"{d['at']}  {d['mode']:<10} desired {d['desired']}, ready {d['ready']}: {d['reason']}"


async def _create(api: Api, args: argparse.Namespace) -> int:
    body = read_body(args.file)
    key: str | None = args.idempotency_key
    reply = await api.call(
        "POST", "/v1/services", body=body, headers={"Idempotency-Key": key} if key else None
    )
    print(pretty(reply.data) if args.as_json else summary(reply.data))
    return EXIT_OK


async def _list(api: Api, args: argparse.Namespace) -> int:
    data = (await api.call("GET", "/v1/services")).data
    if args.as_json:
        print(pretty(data))
    else:
        print(service_list(data["items"]) if data["items"] else "no services")
    return EXIT_OK


async def _show(api: Api, args: argparse.Namespace) -> int:
    svc = (await api.call("GET", _path(args.id))).data
    print(pretty(svc) if args.as_json else detail(svc))
    return EXIT_OK


async def _update(api: Api, args: argparse.Namespace) -> int:
    patch = read_body(args.file)
    svc = (await api.call("PATCH", _path(args.id), body=patch)).data
    print(pretty(svc) if args.as_json else summary(svc))
    return EXIT_OK


async def _delete(api: Api, args: argparse.Namespace) -> int:
    svc = (await api.call("DELETE", _path(args.id))).data
    print(pretty(svc) if args.as_json else summary(svc))
    return EXIT_OK


async def _watch(api: Api, args: argparse.Namespace) -> int:
    """Poll the service, printing each new decision and each change of replicas."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen: set[tuple[str, str]] = set()
    last: tuple[int, int] | None = None
    while True:
        try:
            svc = (await api.call("GET", _path(args.id))).data
        except ProblemError as exc:
            if exc.problem.get("status") == 404 and last is not None:
                print(f"service {args.id} is gone", flush=True)
                return EXIT_OK
            raise
        for d in reversed(svc.get("decisions") or []):
            key = (d["at"], d["reason"])
            if key not in seen:
                seen.add(key)
                print(json.dumps(d) if args.as_json else decision_line(d), flush=True)
        now = (svc["desired_replicas"], svc["ready_replicas"])
        if now != last and not args.as_json:
            print(f"desired {now[0]}, ready {now[1]} ({svc['state']})", flush=True)
        last = now
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return EXIT_TIMEOUT
        await asyncio.sleep(args.interval if left is None else min(args.interval, left))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = add_command
    services = sub.add_parser(
        "services", help="create, list, show, update, delete and watch inference services"
    ).add_subparsers(dest="services_command", required=True, metavar="ACTION")
    run: Command
    p = command(
        services, "create", summary="create a service from a YAML or JSON file", run=_create
    )
    p.add_argument("file", metavar="FILE", help="a service as YAML or JSON, or - for stdin")
    p.add_argument(
        "--idempotency-key", metavar="KEY", help="retry-safe: the same key, the same service"
    )
    command(services, "list", summary="list services", run=_list)
    for name, text, run in (
        ("show", "a service: replicas, load, decisions", _show),
        ("delete", "drain and delete a service", _delete),
    ):
        command(services, name, summary=text, run=run).add_argument("id", metavar="ID")
    p = command(
        services,
        "update",
        summary="change a service: FILE holds only the fields to change (a merge patch)",
        run=_update,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("file", metavar="FILE", help="the changes as YAML or JSON, or - for stdin")
    p = command(
        services,
        "watch",
        summary="print the autoscaler's decisions and replica counts as they change",
        run=_watch,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--interval", type=seconds, default=2.0, help="seconds between polls")
    p.add_argument("--timeout", type=seconds, default=None, help="stop after this long (exit 3)")
