"""The whole API fuzzed from its own OpenAPI document (schemathesis): for every operation,
requests generated from the schema (valid ones, and invalid ones in every field it
describes) sent by an admin and by a user must never get a 5xx, and every response must be
one the document describes: a documented status, a documented content type, a body of the
documented schema.

The broker runs on a real port in a thread of its own (schemathesis sends with `requests`,
which blocks), on SQLite with the demo fleet, `/metrics` behind a token as in production.
Bounded to about half a minute: a fixed number of examples per operation, derandomized (the
same examples on every run, so it cannot flake), no shrinking, no example database written
to the tree.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.api.openapi import openapi_document
from broker.service import create_app
from tests.conftest import fast_settings

TOKENS = ("demo-admin-token", "demo-vision-token")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 100  # per operation, valid and invalid together


class _Server:
    """The broker on 127.0.0.1, served by an event loop in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzzed-broker", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        assert self._runner is not None
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def __enter__(self) -> _Server:
        self._thread.start()
        if not self._ready.wait(timeout=60):
            raise RuntimeError("the broker did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)


@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "broker.db"
    app = create_app(
        fast_settings(f"sqlite+aiosqlite:///{db}", **{"auth.metrics_token_required": True})
    )
    with _Server(app) as server:
        served = requests.get(f"{server.url}/openapi.json", timeout=10).json()
        assert served == json.loads(json.dumps(openapi_document()))
        yield server.url


# The document `GET /openapi.json` serves (`broker_url` checks that it is this one), loaded
# when the module is: schemathesis's lazy loader (`from_fixture`) fails under pytest 9.
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@schema.given(token=st.sampled_from(TOKENS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_to_its_openapi_document(case: Any, token: str, broker_url: str) -> None:
    # 30 s, not the client's 10: a run that starved both cores once timed out a plain list
    # while the broker started; a request that really hangs still fails
    case.call_and_validate(
        base_url=broker_url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=30,
    )
