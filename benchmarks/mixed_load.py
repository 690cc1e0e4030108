"""Mixed API traffic at a fixed rate against real `broker serve` processes (issue 13, item 4).

The probe that opened the item sent mixed traffic to one `broker serve` process and saw
pending grow linearly while GPUs stood free, and jobs sit ~4 s in `scheduled` instead of the
simulator's 1 s start delay. This script repeats that load against either shape:

- `--shape all`: one `broker serve --role all` process (the embedded default, the probe's);
- `--shape split`: one `--role scheduler` process and `--api-replicas N` `--role api`
  processes sharing the database (the production shape).

Load is open-loop: request i is due at `start + i / rate` whatever the earlier ones are
doing, and its latency runs from that due time (so a stalled client or server shows up as
latency instead of silently lowering the rate). At most `--max-in-flight` requests are
outstanding; a request due while the cap is reached is not sent and counts as an error.
Every second a sampler reads the job counts (`broker_jobs` on `/metrics`), the free GPUs
(`/v1/inventory`) and each broker process's RSS and CPU time (`/proc`). After the load
stops it waits for the fleet to drain and reads the events of a sample of the jobs to
measure the time they spent in `scheduled`.

Every run gets a fresh database (a temp SQLite file, or a throwaway PostgreSQL database)
and a copy of config/demo.yaml with the sim speed, start delay and scheduler interval set
here. `python benchmarks/mixed_load.py --help`; benchmarks/README.md explains the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml
from pgtemp import HOST, PG_DSN, pg_database, postgres_unreachable
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "demo.yaml"
BROKER_BIN = Path(sys.executable).parent / "broker"

# Public demo tokens (config/demo.yaml).
ADMIN = "demo-admin-token"
USERS = {"vision-team": "demo-vision-token", "nlp-team": "demo-nlp-token"}

# The demo fleet's models, all of them acceptable: 144 GPUs in 9 pools. See `job_body`.
GPU_MODELS = ["L4", "H100", "A100-80GB", "A100", "T4"]
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
RSS_FROM_S = 30.0  # RSS growth is measured from here: imports, pools and caches settle first
# "Bounded": the least-squares growth of pending over the second half of the window, times
# that half's length, is below this many jobs (the probe's queue grew by ~700 in 90 s).
BOUNDED_GROWTH_JOBS = 20.0
RSS_FLAT_MIB = 16.0  # "no memory growth": RSS at the end at most this far above RSS at 30 s
SCHEDULED_SLACK_S = 1.0  # target: time in `scheduled` within 1 s of the start delay
DRAIN_TIMEOUT_S = 30.0
TAIL_EXCLUDED_S = 10.0  # jobs submitted this close to the end are left out of the sample

Shape = Literal["split", "all"]
Backend = Literal["sqlite", "postgresql"]

# ---- the mix ------------------------------------------------------------------------------

# (operation, share of requests). `sites` and `inventory` together are the 5 % "fleet" reads.
MIX: tuple[tuple[str, float], ...] = (
    ("submit", 0.40),  # POST /v1/jobs
    ("get", 0.25),  # GET /v1/jobs/{id}, one of the 200 latest jobs
    ("list", 0.15),  # GET /v1/jobs?limit=50 (&state=pending|running|succeeded, or none)
    ("cancel", 0.08),  # DELETE /v1/jobs/{id}, a job submitted in the last 3 s
    ("explain", 0.07),  # POST /v1/placements:explain
    ("sites", 0.025),  # GET /v1/sites (user token)
    ("inventory", 0.025),  # GET /v1/inventory (admin token)
)
OPS = [op for op, _ in MIX]
# Statuses that are a correct answer. A cancel may find its job already ended (it ran for
# a fraction of a second, or an earlier cancel hit it): 409 `job-already-finished`, checked
# by its problem type. Anything else, a timeout, a connection error, or a request that could
# not be sent because `--max-in-flight` were outstanding, is an error.
EXPECTED = {
    "submit": {201},
    "get": {200},
    "list": {200},
    "cancel": {200, 409},
    "explain": {200},
    "sites": {200},
    "inventory": {200},
}
LIST_STATES = (None, "pending", "running", "succeeded")
RECENT_GET = 200
RECENT_CANCEL_S = 3.0


def job_body(rng: random.Random, *, duration_s: int) -> dict[str, Any]:
    """A small job: 1 GPU (80 %) or 2 (20 %) of any demo model, P2 or P3, no deadline (so
    nothing is deferred), running `duration_s / sim.speed` wall seconds once started."""
    p2 = rng.random() < 0.5
    return {
        "name": "mixed-load",
        "priority": "P2" if p2 else "P3",
        "kind": "training" if p2 else "experiment",
        "resources": {"gpus": 1 if rng.random() < 0.8 else 2, "gpu_models": GPU_MODELS},
        "workload": {"image": "ghcr.io/example/bench:1", "command": ["python", "run.py"]},
        "estimated_duration_s": duration_s,
    }


# ---- broker processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, *, name: str, database_url: str, port: int, args: Any) -> Path:
    """config/demo.yaml with this run's database, port, simulator and scheduler interval."""
    raw: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["database_url"] = database_url
    raw["http"] = {**raw.get("http", {}), "host": HOST, "port": port}
    raw["latency"]["file"] = str(REPO / "config" / raw["latency"]["file"])
    raw["sim"] = {"speed": args.sim_speed, "start_delay_s": args.start_delay}
    raw["scheduler"] = {**raw.get("scheduler", {}), "interval_s": args.interval}
    if args.nodes_scale != 1:
        for site in raw["sites"]:
            for pool in site.get("pools", []):
                pool["nodes"] *= args.nodes_scale
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class Proc:
    name: str  # "all", "scheduler", "api-0", ...
    role: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


@contextlib.contextmanager
def brokers(tmp: Path, *, database_url: str, args: Any) -> Iterator[list[Proc]]:
    """Start the shape's `broker serve` processes; SIGTERM (then SIGKILL) them at the end."""
    roles = [("all", "all")] if args.shape == "all" else [("scheduler", "scheduler")]
    if args.shape == "split":
        roles += [(f"api-{i}", "api") for i in range(args.api_replicas)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    procs: list[Proc] = []
    try:
        for name, role in roles:
            port = free_port()
            cfg = write_config(tmp, name=name, database_url=database_url, port=port, args=args)
            log = tmp / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [
                        str(BROKER_BIN),
                        "serve",
                        "--config",
                        str(cfg),
                        "--role",
                        role,
                        "--log-level",
                        args.log_level,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp,
                )
            procs.append(
                Proc(name=name, role=role, url=f"http://{HOST}:{port}", popen=popen, log=log)
            )
        yield procs
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(timeout=5)


async def wait_ready(http: aiohttp.ClientSession, proc: Proc) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{tail(proc.log)}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{proc.url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready in {READY_TIMEOUT_S:.0f}s:\n{tail(proc.log)}")


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\w*\b")


def log_problems(path: Path) -> list[str]:
    """Each ERROR (or CRITICAL) record of a broker log, with its traceback's last line (the
    exception); the log level is `--log-level`."""
    out: list[str] = []
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if " ERROR " not in line and " CRITICAL " not in line:
            continue
        cause = ""
        for nxt in lines[i + 1 : i + 200]:
            if nxt[:4].isdigit() and nxt[4:5] == "-":  # the next timestamped record
                break
            if EXCEPTION_LINE.match(nxt):
                cause = nxt  # the exception line of the last traceback in the record
        out.append(f"{line} -> {cause}" if cause else line)
    return out


# ---- /proc --------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def host_busy_s() -> float | None:
    """CPU seconds the machine spent busy (not idle, not iowait), all cores."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


# ---- load ---------------------------------------------------------------------------------


@dataclass
class OpStats:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)  # of every answered request
    first_error: str | None = None


@dataclass
class Load:
    """Shared state of one run's load generator."""

    apis: list[str]
    rng: random.Random
    duration_s: int
    # (monotonic time created, job id, tenant), newest last
    recent: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=2000))
    submitted: list[tuple[float, str]] = field(default_factory=list)  # every 201 in the window
    stats: dict[str, OpStats] = field(default_factory=lambda: {op: OpStats() for op in OPS})
    cancelled_from: dict[str, int] = field(default_factory=dict)  # state a 200 cancel hit
    in_flight: int = 0
    max_in_flight_seen: int = 0
    max_send_lag_s: float = 0.0  # how late the client sent a request after it was due
    counting: bool = False  # False during the warm-up
    window_start: float = 0.0
    _next_api: int = 0

    def api(self) -> str:
        self._next_api = (self._next_api + 1) % len(self.apis)
        return self.apis[self._next_api]

    def record(self, op: str, *, status: str, latency_s: float | None, text: str = "") -> None:
        if not self.counting:
            return
        s = self.stats[op]
        s.sent += 1
        s.statuses[status] = s.statuses.get(status, 0) + 1
        if latency_s is not None:
            s.latencies_s.append(latency_s)
        good = status.isdigit() and int(status) in EXPECTED[op]
        if op == "cancel" and status == "409":
            good = "job-already-finished" in text
        if good:
            s.ok += 1
        else:
            s.errors += 1
            if s.first_error is None:
                s.first_error = f"{status}: {text[:300]}"


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def one_request(
    http: aiohttp.ClientSession, load: Load, *, op: str, due: float, args: Any
) -> None:
    rng = load.rng
    tenant = rng.choice(list(USERS))
    token = USERS[tenant]
    base = load.api()
    method, url, body = "GET", "", None
    if op in ("get", "cancel") and not load.recent:
        op = "submit"  # nothing to read or cancel yet (first requests of the warm-up)
    if op == "submit":
        method, url = "POST", f"{base}/v1/jobs"
        body = job_body(rng, duration_s=args.job_seconds)
    elif op == "explain":
        method, url = "POST", f"{base}/v1/placements:explain"
        body = job_body(rng, duration_s=args.job_seconds)
    elif op == "get":
        _, job_id, tenant = rng.choice(list(load.recent)[-RECENT_GET:])
        token, url = USERS[tenant], f"{base}/v1/jobs/{job_id}"
    elif op == "cancel":
        now = time.monotonic()
        young = [r for r in list(load.recent)[-400:] if now - r[0] <= RECENT_CANCEL_S]
        _, job_id, tenant = rng.choice(young or [load.recent[-1]])
        method, token, url = "DELETE", USERS[tenant], f"{base}/v1/jobs/{job_id}"
    elif op == "list":
        state = rng.choice(LIST_STATES)
        url = f"{base}/v1/jobs?limit=50" + (f"&state={state}" if state else "")
    elif op == "sites":
        url = f"{base}/v1/sites"
    elif op == "inventory":
        token, url = ADMIN, f"{base}/v1/inventory"
    load.in_flight += 1
    load.max_in_flight_seen = max(load.max_in_flight_seen, load.in_flight)
    try:
        async with http.request(method, url, json=body, headers=headers(token)) as resp:
            text = await resp.text()
            status = str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.record(op, status=type(exc).__name__, latency_s=None, text=str(exc))
        return
    finally:
        load.in_flight -= 1
    latency = time.monotonic() - due
    load.record(op, status=status, latency_s=latency, text=text)
    if op == "submit" and status == "201":
        job_id = json.loads(text)["id"]
        load.recent.append((time.monotonic(), job_id, tenant))
        if load.counting:
            load.submitted.append((time.monotonic() - load.window_start, job_id))
    elif op == "cancel" and status == "200" and load.counting:
        events = json.loads(text).get("events") or []
        hit = events[-1]["from_state"] if events else "?"
        load.cancelled_from[hit] = load.cancelled_from.get(hit, 0) + 1


async def drive(http: aiohttp.ClientSession, load: Load, *, args: Any) -> None:
    """Open loop: warm-up, then the measured window, at `args.rate` requests per second."""
    weights = [w for _, w in MIX]
    tasks: set[asyncio.Task[None]] = set()
    total_s = args.warmup + args.seconds
    start = time.monotonic()
    i = 0
    while True:
        due = start + i / args.rate
        if due - start >= total_s:
            break
        if not load.counting and due - start >= args.warmup:
            load.counting, load.window_start = True, due
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            load.max_send_lag_s = max(load.max_send_lag_s, -delay)
        op = load.rng.choices(OPS, weights)[0]
        i += 1
        if load.in_flight >= args.max_in_flight:
            load.record(op, status="not-sent", latency_s=None, text="in-flight cap reached")
            continue
        task = asyncio.create_task(one_request(http, load, op=op, due=due, args=args))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 5)


# ---- sampling -----------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the measured window began (negative during the warm-up)
    jobs: dict[str, float]  # broker_jobs by state
    running_transitions: float | None  # broker_job_transitions_total{state="running"}
    free_gpus: float | None
    total_gpus: float | None
    rss_mib: dict[str, float | None]
    cpu_s: dict[str, float | None]
    host_busy_s: float | None
    client_cpu_s: float


def parse_metrics(text: str) -> tuple[dict[str, float], float | None, dict[str, Any]]:
    """Job counts by state, running transitions, and per-route handler time."""
    jobs: dict[str, float] = {}
    running: float | None = None
    routes: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "broker_jobs":
                jobs[s.labels["state"]] = s.value
            elif s.name == "broker_job_transitions_total" and s.labels.get("state") == "running":
                running = s.value
            elif s.name.startswith("broker_http_request_duration_seconds_") and s.name[-4:] in (
                "_sum",
                "ount",
            ):
                key = f"{s.labels.get('method')} {s.labels.get('route')}"
                routes.setdefault(key, {})[s.name.rsplit("_", 1)[1]] = s.value
            elif s.name == "broker_placement_decision_seconds_count":
                routes["placement_evaluations"] = s.value
    return jobs, running, routes


SAMPLE_TIMEOUT = aiohttp.ClientTimeout(total=3.0)  # a slow answer leaves that figure out


async def get_text(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    within: aiohttp.ClientTimeout | None = None,
) -> str | None:
    try:
        async with http.get(url, headers=headers(token), timeout=within) as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def sample_once(http: aiohttp.ClientSession, *, procs: list[Proc], load: Load) -> Sample:
    """/proc first (always on time), then the broker's job counts and free GPUs."""
    t = time.monotonic() - load.window_start if load.counting else -1.0
    rss = {p.name: rss_mib(p.pid) for p in procs}
    cpu = {p.name: cpu_s(p.pid) for p in procs}
    host, client = host_busy_s(), time.process_time()
    counter = next(p for p in procs if p.role != "api")  # the process that follows the sites
    api = next(p for p in procs if p.role != "scheduler")
    metrics, inventory = await asyncio.gather(
        get_text(http, f"{counter.url}/metrics", ADMIN, within=SAMPLE_TIMEOUT),
        get_text(http, f"{api.url}/v1/inventory", ADMIN, within=SAMPLE_TIMEOUT),
    )
    jobs, running = parse_metrics(metrics)[:2] if metrics else ({}, None)
    free = total = None
    if inventory:
        pools = json.loads(inventory)["items"]
        free = sum(p["free_gpus"] for p in pools)
        total = sum(p["total_gpus"] for p in pools)
    return Sample(
        t=t,
        jobs=jobs,
        running_transitions=running,
        free_gpus=free,
        total_gpus=total,
        rss_mib=rss,
        cpu_s=cpu,
        host_busy_s=host,
        client_cpu_s=client,
    )


async def sampler(
    http: aiohttp.ClientSession, *, procs: list[Proc], load: Load, out: list[Sample]
) -> None:
    """One sample a second until cancelled; each its own task, so a slow answer does not
    delay the next one."""
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        out.append(await sample_once(http, procs=procs, load=load))

    next_at = time.monotonic()
    try:
        while True:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out.sort(key=lambda s: s.t)


# ---- after the load -----------------------------------------------------------------------


async def drain(http: aiohttp.ClientSession, procs: list[Proc]) -> float | None:
    """Seconds until no job is pending, scheduled or running (None: not within the timeout)."""
    counter = next(p for p in procs if p.role != "api")
    began = time.monotonic()
    while time.monotonic() - began < DRAIN_TIMEOUT_S:
        text = await get_text(http, f"{counter.url}/metrics", ADMIN)
        jobs = parse_metrics(text)[0] if text else {}
        if jobs and sum(jobs.get(s, 0) for s in ("pending", "scheduled", "running")) == 0:
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    return None


def parse_at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def event_sample(
    http: aiohttp.ClientSession, *, api: str, load: Load, args: Any
) -> dict[str, Any]:
    """Times from the events of up to `--sample` jobs, evenly spread over the window."""
    pool = [j for t, j in load.submitted if t <= args.seconds - TAIL_EXCLUDED_S]
    step = max(1, len(pool) // args.sample)
    chosen = pool[::step][: args.sample]
    in_scheduled: list[float] = []
    in_pending: list[float] = []
    end_states: dict[str, int] = {}
    gate = asyncio.Semaphore(8)

    async def one(job_id: str) -> None:
        async with gate:
            text = await get_text(http, f"{api}/v1/jobs/{job_id}", ADMIN)
        if text is None:
            end_states["unreadable"] = end_states.get("unreadable", 0) + 1
            return
        job = json.loads(text)
        end_states[job["state"]] = end_states.get(job["state"], 0) + 1
        at = {e["to_state"]: parse_at(e["at"]) for e in job.get("events") or []}
        if "scheduled" in at:
            in_pending.append(at["scheduled"] - parse_at(job["created_at"]))
            if "running" in at:
                in_scheduled.append(at["running"] - at["scheduled"])

    await asyncio.gather(*(one(j) for j in chosen))
    in_scheduled.sort()
    in_pending.sort()
    return {
        "jobs_read": len(chosen),
        "end_states": end_states,
        "with_running_event": len(in_scheduled),
        "scheduled_s": quantiles(in_scheduled),
        "pending_s": quantiles(in_pending),
    }


# ---- figures ------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def quantiles(sorted_values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(sorted_values, 50),
        "p99": percentile(sorted_values, 99),
        "max": sorted_values[-1] if sorted_values else None,
        "mean": statistics.fmean(sorted_values) if sorted_values else None,
    }


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len(points) < 3:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def summarize(*, load: Load, samples: list[Sample], procs: list[Proc], args: Any) -> dict[str, Any]:
    window = [s for s in samples if 0.0 <= s.t <= args.seconds + 0.5]
    ops: dict[str, Any] = {}
    for op, st in load.stats.items():
        lat = sorted(st.latencies_s)
        ops[op] = {
            "sent": st.sent,
            "ok": st.ok,
            "errors": st.errors,
            "statuses": st.statuses,
            "p50_ms": None if not lat else 1000 * (percentile(lat, 50) or 0),
            "p99_ms": None if not lat else 1000 * (percentile(lat, 99) or 0),
            "first_error": st.first_error,
        }
    answered = sum(len(s.latencies_s) for s in load.stats.values())
    out: dict[str, Any] = {
        "requests_due": sum(s.sent for s in load.stats.values()),
        "answered_per_s": answered / args.seconds,
        "ok_per_s": sum(s.ok for s in load.stats.values()) / args.seconds,
        "errors": sum(s.errors for s in load.stats.values()),
        "jobs_submitted": len(load.submitted),
        "cancelled_from": load.cancelled_from,
        "ops": ops,
        "max_in_flight": load.max_in_flight_seen,
        "max_send_lag_ms": 1000 * load.max_send_lag_s,
    }
    if len(window) < 3:
        out["note"] = "fewer than 3 samples in the window"
        return out
    first, last = window[0], window[-1]
    wall = last.t - first.t
    pending = [(s.t, s.jobs.get("pending", 0.0)) for s in window if s.jobs]
    half = [(t, y) for t, y in pending if t >= args.seconds / 2]
    growth_slope = slope(half)
    free = [s.free_gpus for s in window if s.free_gpus is not None]
    out["pending"] = {
        "max": max(y for _, y in pending),
        "mean": statistics.fmean(y for _, y in pending),
        "end": pending[-1][1],
        "slope_second_half_per_s": growth_slope,
        "bounded": growth_slope is not None
        and growth_slope * args.seconds / 2 < BOUNDED_GROWTH_JOBS,
    }
    scheduled = [s.jobs.get("scheduled", 0.0) for s in window if s.jobs]
    out["scheduled_count"] = {"max": max(scheduled), "mean": statistics.fmean(scheduled)}
    out["free_gpus"] = {
        "min": min(free) if free else None,
        "mean": statistics.fmean(free) if free else None,
        "total": first.total_gpus,
        "seconds_with_none_free": sum(1 for f in free if f < 1),
    }
    # Little's law on what the database showed: mean jobs in `scheduled` over the rate at
    # which jobs became running. Unlike the events' times (the simulator's due times), this
    # includes the time the follower took to record a start.
    counted = [s for s in window if s.running_transitions is not None]
    if len(counted) >= 2 and counted[-1].t > counted[0].t:
        c0, c1 = counted[0], counted[-1]
        starts_per_s = (c1.running_transitions or 0) - (c0.running_transitions or 0)
        starts_per_s /= c1.t - c0.t
        if starts_per_s > 0:
            out["scheduled_little_s"] = statistics.fmean(scheduled) / starts_per_s
    out["samples"] = {
        "in_window": len(window),
        "without_job_counts": sum(1 for s in window if not s.jobs),
        "without_free_gpus": sum(1 for s in window if s.free_gpus is None),
    }
    cpu: dict[str, float | None] = {}
    for p in procs:
        a, b = first.cpu_s.get(p.name), last.cpu_s.get(p.name)
        cpu[p.name] = None if a is None or b is None or wall <= 0 else 100 * (b - a) / wall
    cpu["client"] = 100 * (last.client_cpu_s - first.client_cpu_s) / wall if wall > 0 else None
    if first.host_busy_s is not None and last.host_busy_s is not None and wall > 0:
        host = 100 * (last.host_busy_s - first.host_busy_s) / wall
        cpu["host"] = host
        cpu["other"] = host - sum(v for k, v in cpu.items() if k != "host" and v is not None)
    out["cpu_pct"] = cpu
    rss: dict[str, Any] = {}
    at30 = window[min(len(window) - 1, bisect.bisect_left([s.t for s in window], RSS_FROM_S))]
    for p in procs:
        a, b = at30.rss_mib.get(p.name), last.rss_mib.get(p.name)
        rss[p.name] = {
            "at_30s": a,
            "end": b,
            "growth": None if a is None or b is None else b - a,
            "max": max((s.rss_mib.get(p.name) or 0.0) for s in window),
        }
    out["rss_mib"] = rss
    return out


def verdict(summary: dict[str, Any], *, args: Any) -> dict[str, bool | None]:
    sched = summary.get("events", {}).get("scheduled_s", {})
    p99 = sched.get("p99")
    little = summary.get("scheduled_little_s")
    growth = [r["growth"] for r in summary.get("rss_mib", {}).values()]
    return {
        "no_errors": summary["errors"] == 0,
        "pending_bounded": summary.get("pending", {}).get("bounded"),
        "scheduled_p99_within_1s": None
        if p99 is None
        else p99 - args.start_delay <= SCHEDULED_SLACK_S,
        "scheduled_mean_observed_within_1s": None
        if little is None
        else little - args.start_delay <= SCHEDULED_SLACK_S,
        "rss_flat": None
        if not growth or None in growth
        else all(g <= RSS_FLAT_MIB for g in growth),
    }


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "?" if v is None else format(v, spec)


def report(result: dict[str, Any], *, args: Any) -> None:
    s = result["summary"]
    print(
        f"\n== {args.shape} on {args.backend}"
        + (f" ({args.api_replicas} api replicas)" if args.shape == "split" else "")
        + f": {args.rate:g} req/s due for {args.seconds:g} s (+{args.warmup:g} s warm-up), "
        f"sim speed {args.sim_speed:g}, start delay {args.start_delay:g} s, "
        f"interval {args.interval:g} s"
    )
    print(
        f"answered {s['answered_per_s']:.1f} req/s, correct {s['ok_per_s']:.1f} req/s, "
        f"errors {s['errors']} of {s['requests_due']}; {s['jobs_submitted']} jobs submitted; "
        f"max in flight {s['max_in_flight']}, max send lag {s['max_send_lag_ms']:.0f} ms"
    )
    rows = [("op", "sent", "ok", "errors", "p50_ms", "p99_ms", "statuses")]
    for op, o in s["ops"].items():
        rows.append(
            (
                op,
                str(o["sent"]),
                str(o["ok"]),
                str(o["errors"]),
                fmt(o["p50_ms"], ".1f"),
                fmt(o["p99_ms"], ".1f"),
                " ".join(f"{k}:{v}" for k, v in sorted(o["statuses"].items())),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i in (0, 6) else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    for op, o in s["ops"].items():
        if o["first_error"]:
            print(f"  {op}: first error: {o['first_error']}")
    if "pending" not in s:
        print(s.get("note", ""))
        return
    p, f = s["pending"], s["free_gpus"]
    print(
        f"pending: max {p['max']:.0f}, mean {p['mean']:.1f}, at the end {p['end']:.0f}; "
        f"slope over the second half {fmt(p['slope_second_half_per_s'], '+.3f')} jobs/s "
        f"({'bounded' if p['bounded'] else 'GROWING'}); scheduled: max "
        f"{s['scheduled_count']['max']:.0f}, mean {s['scheduled_count']['mean']:.1f}"
    )
    n = s["samples"]
    print(
        f"free GPUs: min {fmt(f['min'])}, mean {fmt(f['mean'], '.1f')} of {fmt(f['total'])}; "
        f"{f['seconds_with_none_free']} samples with none free; of {n['in_window']} samples, "
        f"{n['without_job_counts']} had no job counts and {n['without_free_gpus']} no free "
        f"GPUs (the broker did not answer within {SAMPLE_TIMEOUT.total:g} s)"
    )
    e = s.get("events")
    if e:
        sc, pe = e["scheduled_s"], e["pending_s"]
        minus = {k: None if v is None else v - args.start_delay for k, v in sc.items()}
        print(
            f"time in scheduled (events of {e['with_running_event']} of {e['jobs_read']} "
            f"sampled jobs): p50 {fmt(sc['p50'], '.2f')} s, p99 {fmt(sc['p99'], '.2f')} s, "
            f"max {fmt(sc['max'], '.2f')} s; minus the start delay: p50 "
            f"{fmt(minus['p50'], '.2f')} s, p99 {fmt(minus['p99'], '.2f')} s"
        )
        print(
            f"time in pending (same jobs): p50 {fmt(pe['p50'], '.2f')} s, p99 "
            f"{fmt(pe['p99'], '.2f')} s, max {fmt(pe['max'], '.2f')} s; sampled jobs end "
            f"{e['end_states']}"
        )
    drain_s = result.get("drain_s")
    drained = f"in {drain_s:.1f} s" if drain_s is not None else f"NOT within {DRAIN_TIMEOUT_S:g} s"
    print(
        f"time in scheduled as the database showed it (Little's law: mean scheduled / "
        f"starts per s): {fmt(s.get('scheduled_little_s'), '.2f')} s; drained {drained} "
        f"after the load stopped"
    )
    cpu = s["cpu_pct"]
    print("CPU, % of one core: " + ", ".join(f"{k} {fmt(v)}" for k, v in cpu.items()))
    print(
        "RSS MiB at 30 s -> end (growth): "
        + ", ".join(
            f"{k} {fmt(r['at_30s'])} -> {fmt(r['end'])} ({fmt(r['growth'], '+.1f')})"
            for k, r in s["rss_mib"].items()
        )
    )
    for name, lines in result["log_problems"].items():
        if lines:
            print(f"{name} log: {len(lines)} ERROR/traceback lines, first: {lines[0][:300]}")
    v = result["verdict"]
    print(
        "targets: "
        + ", ".join(f"{k}={'?' if x is None else ('yes' if x else 'NO')}" for k, x in v.items())
    )


# ---- one run ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(backend: Backend) -> AsyncIterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-mixed-db-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'broker.db'}"
    else:
        async with pg_database("bench_mixed_load") as (_, url):
            yield url


async def run(args: Any) -> dict[str, Any]:
    load = Load(apis=[], rng=random.Random(args.seed), duration_s=int(args.seconds))
    samples: list[Sample] = []
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.max_in_flight + 16)  # + the sampler's own
    async with (
        database(args.backend) as url,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
    ):
        with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp_name:
            tmp = Path(tmp_name)
            with brokers(tmp, database_url=url, args=args) as procs:
                for p in procs:  # the scheduler first: it seeds the fleet and takes the leases
                    await wait_ready(http, p)
                load.apis = [p.url for p in procs if p.role != "scheduler"]
                print(
                    "started: " + ", ".join(f"{p.name} (pid {p.pid}, {p.url})" for p in procs),
                    flush=True,
                )
                task = asyncio.create_task(sampler(http, procs=procs, load=load, out=samples))
                try:
                    await drive(http, load, args=args)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                summary = summarize(load=load, samples=samples, procs=procs, args=args)
                drain_s = await drain(http, procs)
                summary["events"] = await event_sample(http, api=load.apis[0], load=load, args=args)
                final: dict[str, Any] = {}
                for p in procs:
                    text = await get_text(http, f"{p.url}/metrics", ADMIN)
                    final[p.name] = parse_metrics(text)[2] if text else None
                problems = {p.name: log_problems(p.log) for p in procs}
    return {
        "summary": summary,
        "drain_s": drain_s,
        "server_metrics": final,
        "log_problems": problems,
        "verdict": verdict(summary, args=args),
        "samples": [asdict(s) for s in samples],
    }


def git_tree() -> dict[str, Any]:
    """The commit measured and the files changed on top of it (read-only git calls)."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"head": git("rev-parse", "HEAD"), "changed_files": changed}


async def background_load(seconds: float = 1.0) -> float | None:
    """The machine's busy CPU in % of one core over `seconds`, before we add any load."""
    start = host_busy_s()
    await asyncio.sleep(seconds)
    end = host_busy_s()
    return None if start is None or end is None else 100 * (end - start) / seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--shape", choices=["split", "all"], default="split")
    p.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    p.add_argument("--api-replicas", type=int, default=1, help="--shape split: api processes")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    p.add_argument("--seconds", type=float, default=180.0, help="measured window")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load not counted")
    p.add_argument("--max-in-flight", type=int, default=512)
    p.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    p.add_argument("--sim-speed", type=float, default=600.0, help="sim.speed")
    p.add_argument("--start-delay", type=float, default=1.0, help="sim.start_delay_s")
    p.add_argument("--job-seconds", type=int, default=60, help="estimated_duration_s of a job")
    p.add_argument("--interval", type=float, default=2.0, help="scheduler.interval_s")
    p.add_argument("--nodes-scale", type=int, default=1, help="multiply every pool's nodes")
    p.add_argument("--sample", type=int, default=300, help="jobs whose events are read")
    p.add_argument("--log-level", default="warning", choices=["info", "warning", "error"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.api_replicas < 1 or args.nodes_scale < 1:
        p.error("--rate and --seconds must be > 0, --api-replicas and --nodes-scale >= 1")
    return args


async def main_async(args: argparse.Namespace) -> int:
    if args.backend == "postgresql" and (why := await postgres_unreachable()):
        print(f"cannot reach postgres@{HOST}:{PG_DSN['port']}: {why}", file=sys.stderr)
        return 1
    background = await background_load()
    if background is not None:
        print(
            f"host CPU busy before the run (1 s sample): {background:.0f}% of "
            f"{100 * (os.cpu_count() or 1)}%; other work on the machine skews the figures"
        )
    started = datetime.now().astimezone()
    result = await run(args)
    report(result, args=args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "settings": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "started": started.isoformat(timespec="seconds"),
                    "tree": git_tree(),
                    "mix": dict(MIX),
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "aiohttp": aiohttp.__version__,
                        "platform": platform.platform(),
                        "background_cpu_pct": background,
                    },
                    **result,
                },
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
