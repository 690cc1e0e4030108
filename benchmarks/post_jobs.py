"""POST /v1/jobs throughput: the real broker next to a bare aiohttp insert, per database.

Each server runs in its own process (multiprocessing "spawn": a fresh interpreter, no
inherited event loop or engine) on 127.0.0.1 with an OS-chosen free port, so the load
generator in this process never shares an event loop with it. Every server gets a fresh
database (a temp SQLite file, or a throwaway PostgreSQL database dropped afterwards).

- broker: `create_app(load_settings(config/demo.yaml, overrides=...))`, the whole stack
  (auth, pydantic validation, the fleet reads and the placement dry run, the job + event
  insert, metrics, the scheduling loop and the simulated fleet).
- bare: one aiohttp handler that `json.loads` the body and inserts one row into a table
  with the broker's `jobs` schema (the `JobRow` table: same columns and indexes) with a
  SQLAlchemy Core insert, on an engine from `broker.db.connection.create_engine`, so it has
  the same driver, pool and pragmas (on SQLite: WAL, BEGIN IMMEDIATE).

Run `python benchmarks/post_jobs.py --help`; benchmarks/README.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
import sqlalchemy
from aiohttp import web
from pgtemp import HOST, PG_DSN, pg_database, postgres_unreachable
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
TOKEN = "demo-vision-token"  # public demo token (config/demo.yaml), tenant vision-team
# The periodic pass is pushed out of the measurement; each submission still wakes the loop.
SCHEDULER_INTERVAL_S = 3600
SERVER_START_TIMEOUT_S = 60.0

Backend = Literal["sqlite", "postgresql"]
Target = Literal["broker", "bare"]

JOB_BODY: dict[str, Any] = {
    "name": "bench-resnet50-finetune",
    "priority": "P2",
    "kind": "training",
    "resources": {"gpus": 1, "gpu_models": ["L4"], "cpu": 8.0, "memory_gb": 32.0},
    "workload": {
        "image": "ghcr.io/example/resnet50-train:1.4",
        "command": ["python", "train.py", "--epochs", "3"],
        "env": {"DATASET": "s3://example-bucket/imagenet-subset"},
    },
    "estimated_duration_s": 3600,
}


# ---- servers (run in child processes) ----------------------------------------------------

BARE_ENGINE = web.AppKey("bare_engine", AsyncEngine)


def _broker_app(database_url: str) -> web.Application:
    from broker.config import load_settings
    from broker.service import create_app

    settings = load_settings(
        DEMO_CONFIG,
        env={},  # ignore BROKER_* variables of the calling shell
        overrides={"database_url": database_url, "scheduler.interval_s": SCHEDULER_INTERVAL_S},
    )
    return create_app(settings)


def _bare_app(database_url: str) -> web.Application:
    from broker.db.connection import create_engine
    from broker.db.models import Base

    jobs = Base.metadata.tables["jobs"]  # the broker's jobs table: same columns and indexes

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(database_url)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: jobs.create(c, checkfirst=True))
        app[BARE_ENGINE] = engine
        yield
        await engine.dispose()

    async def submit(request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        now = datetime.now(UTC)
        job_id = f"job-{uuid.uuid4().hex}"
        async with request.app[BARE_ENGINE].begin() as conn:
            await conn.execute(
                insert(jobs).values(
                    id=job_id,
                    tenant="vision-team",
                    name=data["name"],
                    tier=data["priority"],
                    kind=data["kind"],
                    state="pending",
                    state_reason="submitted",
                    spec=data,
                    gpu_milli=1000 * data["resources"]["gpus"],
                    estimated_duration_s=data["estimated_duration_s"],
                    deadline=None,
                    preemptible=False,
                    idempotency_key=None,
                    request_hash=None,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
        return web.json_response({"id": job_id}, status=201)

    app = web.Application()
    app.cleanup_ctx.append(engine_ctx)
    app.router.add_post("/v1/jobs", submit)
    return app


def _serve(target: Target, database_url: str, conn: Connection) -> None:
    """Child process: serve on 127.0.0.1:<free port>, report the port, stop on SIGTERM."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="server %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve_async(target, database_url, conn))
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


async def _serve_async(target: Target, database_url: str, conn: Connection) -> None:
    app = _broker_app(database_url) if target == "broker" else _bare_app(database_url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # No access log: it is one stderr line per request, and it would cost both servers alike.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=HOST, port=0)  # port 0: the OS picks a free one
        await site.start()
        conn.send(("port", runner.addresses[0][1]))
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def server_process(*, target: Target, database_url: str) -> Iterator[tuple[int, int]]:
    """Start one server process; yield its port and pid; stop it (SIGTERM, then SIGKILL)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_serve, args=(target, database_url, child), name=f"bench-{target}", daemon=True
    )
    proc.start()
    child.close()
    try:
        if not parent.poll(SERVER_START_TIMEOUT_S):
            raise RuntimeError(f"{target} server did not start in {SERVER_START_TIMEOUT_S}s")
        try:
            kind, value = parent.recv()
        except EOFError:
            raise RuntimeError(
                f"{target} server exited at start-up (code {proc.exitcode}); see its stderr above"
            ) from None
        if kind != "port":
            raise RuntimeError(f"{target} server failed at start-up: {value}")
        yield int(value), int(proc.pid or 0)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()


# ---- load generator ----------------------------------------------------------------------


@dataclass
class Run:
    target: Target
    requests: int = 0
    created: int = 0  # 201 responses
    errors: int = 0  # anything else, including connection errors
    duration_s: float = 0.0
    req_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    rows_in_db: int | None = None  # jobs rows after the run, warm-up included
    # CPU use during the measured phase, in % of one core (Linux /proc; None elsewhere).
    server_cpu_pct: float | None = None  # the server process, all its threads
    client_cpu_pct: float | None = None  # this process (the load generator)
    host_cpu_pct: float | None = None  # the whole machine, of 100 * cores: shows other load
    server: dict[str, float] = field(default_factory=dict)  # broker-side /metrics figures


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_values[int(rank) - 1]


async def fire(
    session: aiohttp.ClientSession,
    *,
    url: str,
    run: Run,
    requests: int,
    concurrency: int,
    seconds: float,
) -> None:
    """`concurrency` workers POST until `requests` were sent or `seconds` passed."""
    body = json.dumps(JOB_BODY).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    issued = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    status = str(resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                text, status = str(exc), type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if status != "201" and run.first_error is None:
                run.first_error = f"{status}: {text[:300]}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.duration_s = time.perf_counter() - started
    latencies.sort()
    run.requests = len(latencies)
    run.created = run.statuses.get("201", 0)
    run.errors = run.requests - run.created
    run.req_per_s = run.requests / run.duration_s if run.duration_s else 0.0
    run.p50_ms, run.p95_ms, run.p99_ms = (1000 * percentile(latencies, q) for q in (50, 95, 99))


async def broker_metrics(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Server-side figures from the broker's /metrics: handler time and scheduler work."""
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name.startswith("broker_http_request_duration_seconds")
                and s.labels.get("route") == "/v1/jobs"
                and s.labels.get("method") == "POST"
            ):
                if s.name.endswith("_sum"):
                    out["handler_seconds_sum"] = s.value
                elif s.name.endswith("_count"):
                    out["handler_count"] = s.value
            elif s.name == "broker_placement_decision_seconds_count":
                out["scheduler_evaluations"] = s.value
            elif s.name == "broker_placement_decision_seconds_sum":
                out["scheduler_evaluation_seconds"] = s.value
            elif s.name == "broker_jobs" and s.labels.get("state") in (
                "pending",
                "scheduled",
                "running",
            ):
                out[f"jobs_{s.labels['state']}"] = s.value
    if out.get("handler_count"):
        out["handler_mean_ms"] = 1000 * out["handler_seconds_sum"] / out["handler_count"]
    return out


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy (not idle, not iowait), from /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_meter(run: Run, server_pid: int) -> Iterator[None]:
    """Fill the run's CPU figures for the duration of the block."""
    srv0, host0, me0 = process_cpu_s(server_pid), host_busy_s(), time.process_time()
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    srv1, host1 = process_cpu_s(server_pid), host_busy_s()
    run.client_cpu_pct = 100 * (time.process_time() - me0) / wall
    if srv0 is not None and srv1 is not None:
        run.server_cpu_pct = 100 * (srv1 - srv0) / wall
    if host0 is not None and host1 is not None:
        run.host_cpu_pct = 100 * (host1 - host0) / wall


async def measure(*, target: Target, port: int, pid: int, args: argparse.Namespace) -> Run:
    base = f"http://{HOST}:{port}"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=max(60.0, args.seconds))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if args.warmup:  # opens the connections, fills pools and statement caches
            await fire(
                session,
                url=f"{base}/v1/jobs",
                run=Run(target=target),
                requests=args.warmup,
                concurrency=args.concurrency,
                seconds=args.seconds,
            )
        run = Run(target=target)
        with cpu_meter(run, pid):
            await fire(
                session,
                url=f"{base}/v1/jobs",
                run=run,
                requests=args.requests,
                concurrency=args.concurrency,
                seconds=args.seconds,
            )
        if target == "broker":
            run.server = await broker_metrics(session, base)
    return run


# ---- databases ---------------------------------------------------------------------------


def sqlite_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def run_sqlite(target: Target, args: argparse.Namespace) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-post-jobs-") as tmp:
        path = Path(tmp) / f"{target}.db"
        url = f"sqlite+aiosqlite:///{path}"
        with server_process(target=target, database_url=url) as (port, pid):
            run = await measure(target=target, port=port, pid=pid, args=args)
        run.rows_in_db = sqlite_rows(path)  # after the server stopped and checkpointed
    return run


async def run_postgresql(target: Target, args: argparse.Namespace) -> Run:
    async with pg_database(f"bench_post_jobs_{target}") as (name, url):
        with server_process(target=target, database_url=url) as (port, pid):
            run = await measure(target=target, port=port, pid=pid, args=args)
        db = await asyncpg.connect(**{**PG_DSN, "database": name}, timeout=5)
        try:
            run.rows_in_db = int(await db.fetchval("SELECT count(*) FROM jobs"))
        finally:
            await db.close()
    return run


# ---- report ------------------------------------------------------------------------------

COLUMNS = (
    "target",
    "requests",
    "201",
    "errors",
    "duration_s",
    "req/s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rows_in_db",
    "srv_cpu%",
    "cli_cpu%",
    "host_cpu%",
)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def table(runs: list[Run]) -> str:
    rows = [COLUMNS] + [
        (
            r.target,
            str(r.requests),
            str(r.created),
            str(r.errors),
            f"{r.duration_s:.2f}",
            f"{r.req_per_s:.1f}",
            f"{r.p50_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}",
            "?" if r.rows_in_db is None else str(r.rows_in_db),
            _pct(r.server_cpu_pct),
            _pct(r.client_cpu_pct),
            _pct(r.host_cpu_pct),
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def overhead(broker: Run, bare: Run) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    return {
        "throughput_ratio": ratio(bare.req_per_s, broker.req_per_s),
        "p50_ratio": ratio(broker.p50_ms, bare.p50_ms),
    }


def report(backend: Backend, broker: Run, bare: Run, args: argparse.Namespace) -> None:
    print(
        f"\n== {backend}: POST /v1/jobs, N={args.requests} C={args.concurrency} "
        f"T={args.seconds:g}s (warm-up {args.warmup} not counted)"
    )
    print(table([broker, bare]))
    o = {k: "?" if v is None else f"{v:.1f}" for k, v in overhead(broker, bare).items()}
    print(
        f"overhead: bare serves {o['throughput_ratio']}x the broker's req/s; "
        f"broker p50 is {o['p50_ratio']}x bare's"
    )
    s = broker.server
    if s:
        print(
            f"broker /metrics: mean handler time {s.get('handler_mean_ms', 0):.1f} ms "
            f"over {s.get('handler_count', 0):.0f} POSTs (warm-up included); scheduler "
            f"evaluated {s.get('scheduler_evaluations', 0):.0f} job placements "
            f"({s.get('scheduler_evaluation_seconds', 0):.1f}s wall inside them); jobs now "
            f"pending={s.get('jobs_pending', 0):.0f} scheduled={s.get('jobs_scheduled', 0):.0f}"
            f" running={s.get('jobs_running', 0):.0f}"
        )
    for r in (broker, bare):
        if r.first_error:
            print(f"{r.target}: first error: {r.first_error}")
        if r.rows_in_db is not None and r.rows_in_db != r.created + args.warmup:
            print(
                f"{r.target}: note: {r.rows_in_db} rows in jobs, expected "
                f"{r.created + args.warmup} (201s + warm-up)"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--requests", type=int, default=3000, help="stop after N requests")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    p.add_argument("--seconds", type=float, default=30.0, help="or after T seconds")
    p.add_argument("--warmup", type=int, default=64, help="uncounted requests first")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0:
        p.error("--requests and --concurrency must be >= 1, --seconds > 0, --warmup >= 0")
    return args


async def background_load(seconds: float = 1.0) -> float | None:
    """The machine's busy CPU in % of one core over `seconds`, before we add any load."""
    start = host_busy_s()
    await asyncio.sleep(seconds)
    end = host_busy_s()
    return None if start is None or end is None else 100 * (end - start) / seconds


async def main_async(args: argparse.Namespace) -> int:
    backends: list[Backend] = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results: dict[str, Any] = {}
    background = await background_load()
    if background is not None:
        print(
            f"host CPU busy before the run (1 s sample): {background:.0f}% of "
            f"{100 * (os.cpu_count() or 1)}%; other work on the machine skews the figures"
        )
    for backend in backends:
        if backend == "postgresql" and (why := await postgres_unreachable()):
            print(
                f"\n== postgresql: SKIPPED, cannot reach postgres@{HOST}:{PG_DSN['port']} ({why})",
                file=sys.stderr,
            )
            results[backend] = {"skipped": why}
            continue
        runner = run_sqlite if backend == "sqlite" else run_postgresql
        try:
            broker = await runner("broker", args)
            bare = await runner("bare", args)
        except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
            print(f"\n== {backend}: FAILED, {exc}", file=sys.stderr)
            results[backend] = {"failed": str(exc)}
            continue
        report(backend, broker, bare, args)
        results[backend] = {
            "broker": asdict(broker),
            "bare": asdict(bare),
            "overhead": overhead(broker, bare),
        }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: v for k, v in vars(args).items() if k != "json"},
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "aiohttp": aiohttp.__version__,
                        "sqlalchemy": sqlalchemy.__version__,
                        "platform": platform.platform(),
                        "background_cpu_pct": background,
                    },
                    "job_body": JOB_BODY,
                    "backends": results,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"\nwrote {args.json}")
    return 0 if any("broker" in r for r in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
