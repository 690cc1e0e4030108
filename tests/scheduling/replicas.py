"""Real `broker serve` processes on one database, driven over HTTP: the helpers the replica
tests share (takeover, roles)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from sqlalchemy import text

from broker.db.connection import create_engine
from tests.conftest import ADMIN, DEMO_CONFIG, REPO, VISION

LEASE_S, RENEW_S = 3.0, 1.0
SPEED = 100.0  # simulated seconds per wall second
START_DELAY_S = 0.5
SLACK_S = 6.0  # process scheduling, HTTP polling and one scheduler interval, on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def config(
    tmp: Path,
    *,
    db: str,
    name: str,
    port: int,
    interval_s: float,
    scheduler: dict[str, Any] | None = None,
) -> Path:
    raw: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["database_url"] = db
    raw["http"] = {"host": "127.0.0.1", "port": port}
    raw["latency"]["file"] = str(REPO / "config" / raw["latency"]["file"])
    raw["sim"] = {"speed": SPEED, "start_delay_s": START_DELAY_S}
    raw["scheduler"] = {
        "interval_s": interval_s,
        "min_runtime_s": 0,
        "deferral": False,
        "follow": {"lease_s": LEASE_S, "renew_s": RENEW_S, "resync_s": 5.0},
        **(scheduler or {}),
    }
    raw["schedule"] = {"lease_ttl_s": LEASE_S, "renew_s": RENEW_S}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextmanager
def replicas(tmp: Path, db: str) -> Iterator[Callable[..., Replica]]:
    """A function starting replicas (stopped with SIGTERM, or killed, on the way out)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str,
        *,
        interval_s: float,
        role: str = "all",
        scheduler: dict[str, Any] | None = None,
    ) -> Replica:
        port = free_port()
        path = config(tmp, db=db, name=name, port=port, interval_s=interval_s, scheduler=scheduler)
        log = tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "broker"),
                    "serve",
                    "--config",
                    str(path),
                    "--role",
                    role,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "BROKER_CONFIG": ""},
            )
        procs.append(proc)
        return Replica(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log=log)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def ready(http: aiohttp.ClientSession, replica: Replica, *, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert replica.proc.poll() is None, replica.text()
        try:
            async with http.get(f"{replica.url}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{replica.name} never became ready:\n{replica.text()}")


async def follows_every_site(
    db: str, replica: Replica, *, within_s: float = 15, lease: str = "follow:%"
) -> None:
    """Wait until `replica` holds every site's follow lease (or every lease like `lease`)."""
    engine = create_engine(db)
    try:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                holders = (
                    await conn.execute(
                        text("SELECT holder FROM leases WHERE name LIKE :n"), {"n": lease}
                    )
                ).scalars()
                pids = {h.split(":")[1] for h in holders}
            if pids == {str(replica.proc.pid)}:
                return
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    raise AssertionError(f"{replica.name} does not follow every site: {pids}")


async def submit(http: aiohttp.ClientSession, replica: Replica, body: dict[str, Any]) -> str:
    async with http.post(f"{replica.url}/v1/jobs", json=body, headers=VISION) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


async def job(http: aiohttp.ClientSession, replica: Replica, job_id: str) -> dict[str, Any]:
    async with http.get(f"{replica.url}/v1/jobs/{job_id}", headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def until(
    http: aiohttp.ClientSession,
    replica: Replica,
    job_ids: list[str],
    states: set[str],
    *,
    within_s: float,
) -> float:
    """Wait until every job is in one of `states`; returns how long it took."""
    began = time.monotonic()
    while True:
        now = {j: (await job(http, replica, j))["state"] for j in job_ids}
        if all(s in states for s in now.values()):
            return time.monotonic() - began
        if time.monotonic() - began > within_s:
            raise AssertionError(f"after {within_s:.0f} s: {now}\n{replica.text()[-4000:]}")
        await asyncio.sleep(0.2)


async def all_gpus_free(http: aiohttp.ClientSession, replica: Replica) -> None:
    async with http.get(f"{replica.url}/v1/inventory", headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
        pools = (await resp.json())["items"]
    held = {p["pool_id"]: p["allocated_gpus"] for p in pools}
    assert not {k: v for k, v in held.items() if v}, f"GPUs still held: {held}"


def kill(replica: Replica) -> None:
    replica.proc.send_signal(signal.SIGKILL)
    replica.proc.wait(timeout=10)


def errors(replica: Replica) -> list[str]:
    return [
        line
        for line in replica.text().splitlines()
        if " ERROR " in line or "Traceback" in line or "InvalidTransition" in line
    ]


def states(job: dict[str, Any]) -> list[str]:
    return [e["to_state"] for e in job["events"]]
