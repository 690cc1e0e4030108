"""`broker serve`, `broker db upgrade` and `broker token`: commands that run in-process."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from pathlib import Path

from aiohttp import web

from broker.api.auth import hash_token, new_token
from broker.checks import SiteCheck, check_configured, hint_for
from broker.config import load_settings
from broker.db.connection import create_engine, current_revision, upgrade
from broker.domain.clock import SystemClock
from broker.service import ServeRole, create_app
from redaction.logs import install as install_log_redaction


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return load_settings(
        Path(args.config) if args.config else None,
        overrides={
            "database_url": args.database_url,
            **({"http.host": args.host, "http.port": args.port} if "host" in args else {}),
        },
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # we log the revision ourselves
    # each duty logs its own outcome; APScheduler's "Running job ... executed" lines are noise
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # The access log format names no header, so the Authorization header never reaches it.
    role = ServeRole(args.role)
    app = create_app(settings, role=role)
    print(
        f"broker: serving http://{settings.http.host}:{settings.http.port} as {role.value} "
        f"({len(settings.sites)} sites, database {_redact(settings.database_url)})",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(
        app,
        host=settings.http.host,
        port=settings.http.port,
        print=None,
        access_log_format='%a "%r" %s %b %Tfs',
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> str | None:
        engine = create_engine(settings.database_url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    rev = asyncio.run(run())
    print(f"database {_redact(settings.database_url)} is at revision {rev}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check every configured site (or those named); exit 1 when any check fails."""
    install_log_redaction()  # the SDKs' warnings reach stderr through logging's last resort
    settings = _settings(args)
    try:
        results = asyncio.run(check_configured(settings, clock=SystemClock(), sites=args.site))
    except KeyError as exc:
        print(f"broker: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([_check_json(r) for r in results], indent=2))
    else:
        for r in results:
            lacks = f"; lacks {', '.join(a.value for a in r.lacks)}" if r.lacks else ""
            print(f"{r.site} ({r.kind}, credentials: {r.credentials}{lacks})")
            for item in r.items:
                print(f"  {'ok  ' if item.ok else 'FAIL'} {item.name}: {item.detail}")
                if hint := hint_for(item):
                    print(f"       fix: {hint}")
    return 0 if all(r.ok for r in results) else 1


def _check_json(r: SiteCheck) -> dict[str, object]:
    return {
        "site": r.site,
        "kind": r.kind,
        "credentials": r.credentials,
        "lacks": [a.value for a in r.lacks],
        "ok": r.ok,
        "checks": [
            {"name": i.name, "ok": i.ok, "detail": i.detail, "hint": hint_for(i)} for i in r.items
        ],
        "checked_at": r.checked_at.isoformat(),
    }


def cmd_token_hash(args: argparse.Namespace) -> int:
    """Hash a token read from stdin (or a prompt), for the `auth.tokens` config list."""
    token = (sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass("token: ")).strip()
    if len(token) < 16:
        print("broker: a token must be at least 16 characters", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def cmd_token_new(args: argparse.Namespace) -> int:
    """A new random token and its hash: give the token to its user, put the hash in config."""
    token = new_token()
    print(f"token: {token}\nhash:  {hash_token(token)}")
    return 0


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
