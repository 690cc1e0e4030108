"""A real broker for the CLI tests: `broker serve` in a subprocess, on a free port.

The broker runs the demo fleet from config/demo.yaml with a fast simulator (a 600 s job runs
one second), a SQLite file in a temporary folder, and the demo tokens. It is started once per
session; tests keep out of each other's way by asserting on the jobs they submit, and the
paging test owns the `nlp-team` tenant alone. The CLI runs as a subprocess too, with the
same interpreter, so what is tested is what a user types.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The demo tokens (public, in config/demo.yaml), by the name tests use for each user.
TOKENS = {"admin": "demo-admin-token", "vision": "demo-vision-token", "nlp": "demo-nlp-token"}
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The environment without any BROKER_* variable of the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}


@dataclass(frozen=True)
class Broker:
    url: str

    def request(
        self, method: str, path: str, *, user: str = "vision", body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        """The API straight over urllib: setup, and the reference the CLI is checked against."""
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKENS[user]}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def submit(self, body: Mapping[str, Any], *, user: str = "vision") -> dict[str, Any]:
        status, job = self.request("POST", "/v1/jobs", user=user, body=body)
        assert status == 201, job
        return dict(job)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp("broker")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    port = free_port()
    config["database_url"] = f"sqlite+aiosqlite:///{tmp / 'broker.db'}"
    config["http"] = {"host": "127.0.0.1", "port": port}
    config["sim"] = {"speed": 600, "start_delay_s": 0.2}
    config["latency"] = {"file": str(REPO / "config" / "latency.csv")}
    path = tmp / "broker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = tmp / "broker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli.main",
                "serve",
                "--config",
                str(path),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log_path)
        yield Broker(url=url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the broker exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(
        f"the broker did not answer /healthz in {START_TIMEOUT_S}s:\n{log_path.read_text()}"
    )


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        """The data rows of a table on stdout (header dropped), split on whitespace."""
        return [line.split() for line in self.out.splitlines()[1:]]


Cli = Callable[..., Result]


@pytest.fixture
def cli(broker: Broker) -> Cli:
    """Run `broker ARGS...` as `user` (a TOKENS name; None for no token, or an explicit
    `token`), with BROKER_URL and BROKER_TOKEN set. No token may ever appear in its output."""

    def run(
        *args: str,
        user: str | None = "vision",
        token: str | None = None,
        url: str | None = None,
        stdin: str | None = None,
    ) -> Result:
        env = clean_env()
        env["BROKER_URL"] = url or broker.url
        token = token or (TOKENS[user] if user else None)
        if token is not None:
            env["BROKER_TOKEN"] = token
        proc = subprocess.run(
            [sys.executable, "-m", "broker.cli.main", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
        for secret in {*TOKENS.values(), *([token] if token else [])}:
            assert secret not in proc.stdout, f"token leaked to stdout: {proc.stdout}"
            assert secret not in proc.stderr, f"token leaked to stderr: {proc.stderr}"
        return Result(code=proc.returncode, out=proc.stdout, err=proc.stderr)

    return run


def job_body(name: str, **overrides: Any) -> dict[str, Any]:
    """A small valid job: one GPU of any model, 600 s (one wall second in the simulator)."""
    return {
        "name": name,
        "priority": "P3",
        "kind": "experiment",
        "resources": {"gpus": 1},
        "workload": {"image": "busybox:1.36", "command": ["true"]},
        "estimated_duration_s": 600,
        **overrides,
    }


@pytest.fixture
def closed_url() -> str:
    """A local URL nothing listens on (the port was free a moment ago)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def make_job() -> Callable[..., dict[str, Any]]:
    return job_body
