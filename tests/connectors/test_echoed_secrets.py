"""Providers that repeat credentials in their error messages: nothing of them surfaces.

The estate of `test_secrets.py` again (one site of every kind, credentials in the files
operators keep them in), but every provider now echoes what it was sent back in its errors,
as a misbehaving proxy or API gateway does:

* the Kubernetes API server answers `/version` with a 500 and everything else with a 403
  whose `Status.message` holds the bearer token, the client certificate and a line of the
  client key (the kubeconfig carries `client-certificate-data` and `client-key-data`);
* a stub EC2/STS endpoint in front of moto answers every call `AuthFailure` with a
  `<Message>` holding the access key id, the secret key and a session token that contains
  `-` (which the old shape-based scrub let through);
* the Compute Engine API answers 401 with the bearer JWT it was sent, the whole private key
  and one line of it, after the token endpoint really minted tokens from the key;
* Electricity Maps answers 401 with its own key (`auth-token`) in the error and message.

Then `broker check` (table and JSON), the service's `/v1/admin/providers`, `/v1/sites` as a
plain user and as an admin, every table and every log record at DEBUG are searched for
every planted value, as `test_secrets.py` does. A user sees only a generic reason; an admin
sees the provider's redacted text. WattTime's login, password and bearer echoes are at the
end: the broker cannot configure WattTime (its basis is marginal), so that source is driven
directly, with the log hook installed.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.config import load_settings
from broker.service import create_app
from carbon.live import SourceError, WattTimeSettings, WattTimeSource
from redaction.logs import install as install_log_redaction
from tests.carbon.live import fake_watttime
from tests.carbon.live.fake_common import Reply, VirtualClock
from tests.carbon.live.fake_electricitymaps import FakeElectricityMaps
from tests.carbon.live.fake_watttime import FakeWattTime
from tests.connectors.aws.fakes import StubProxy
from tests.connectors.gcp.fake_compute import FakeCompute
from tests.connectors.gcp.fake_resources import google_error
from tests.connectors.kubernetes import objects as o
from tests.connectors.kubernetes.fake_api import FakeKubernetes
from tests.connectors.test_secrets import (  # noqa: F401  (fixtures, used by name)
    Planted,
    broker_check,
    by_site,
    dump_database,
    leaks,
    log_texts,
    logs,
    moto_server,
    moto_url,
    quiet_environment,
    write_estate,
)

JsonDict = dict[str, Any]


# -- providers that echo ---------------------------------------------------------------------


class EchoingKubernetes(FakeKubernetes):
    """Answers `/version` 500 and everything else 403, repeating the request's credentials."""

    client_cert = ""
    client_key_line = ""

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        sent = request.headers.get("Authorization", "")
        said = (
            f"request from {sent} with client certificate {self.client_cert} "
            f"(key {self.client_key_line}) was refused"
        )
        version = request.path.rstrip("/") == "/version"
        code, reason = (500, "InternalError") if version else (403, "Forbidden")
        return web.json_response(o.status(code, reason, said), status=code)


class EchoingCompute(FakeCompute):
    """Mints tokens at `/token` as Google does, then answers every API call 401 with the bearer
    credential it was sent, the whole private key and one line of it."""

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/token":
            response: web.StreamResponse = await handler(request)
            return response
        sent = request.headers.get("Authorization", "")
        self.auth.caller(sent)  # records the bearer, searched for below
        key = next(iter(self.auth.keys.values()))
        said = (
            f"Request had invalid authentication credentials: {sent}. Key on file: "
            f"{key.private_key_pem} (line {key.key_body_lines[3]})"
        )
        return google_error(401, said, "authError")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def k8s() -> AsyncIterator[EchoingKubernetes]:
    server = EchoingKubernetes(token="never-accepted")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gcp() -> AsyncIterator[EchoingCompute]:
    server = EchoingCompute()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def proxy(moto_url: str) -> Iterator[StubProxy]:  # noqa: F811
    stub = StubProxy(moto_url)
    stub.start()
    yield stub
    stub.stop()


@pytest.fixture
async def electricitymaps() -> AsyncIterator[tuple[FakeElectricityMaps, str]]:
    fake = FakeElectricityMaps(VirtualClock(_now()))
    server = TestServer(fake.app())
    await server.start_server()
    yield fake, str(server.make_url("/v3"))
    await server.close()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# -- the planted values ----------------------------------------------------------------------


def _pem(label: str, body: bytes) -> str:
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


class Echoed:
    """The estate's planted values plus what only this test plants."""

    def __init__(self) -> None:
        self.base = Planted(
            aws_session_token=f"IQoJb3JpZ2luX2VjE-SECRET-{secrets.token_hex(24)}-Fwo",
        )
        self.client_cert = _pem("CERTIFICATE", b"client-cert-SECRET-" + secrets.token_bytes(300))
        self.client_key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            .decode()
        )
        self.em_key = f"em-SECRET-{secrets.token_hex(16)}"

    def key_lines(self) -> list[str]:
        return [line for line in self.client_key.splitlines() if "-----" not in line]

    def by_label(self, gcp: FakeCompute) -> dict[str, str]:
        found = self.base.by_label(gcp)
        found["aws access key id"] = self.base.aws_access_key_id
        found["k8s client certificate"] = self.client_cert
        found["k8s client certificate data"] = base64.b64encode(self.client_cert.encode()).decode()
        for n, line in enumerate(self.client_cert.splitlines()[1:-1]):
            if len(line) >= 40:
                found[f"k8s client certificate line {n}"] = line
        for n, line in enumerate(self.key_lines()):
            if len(line) >= 40:
                found[f"k8s client key line {n}"] = line
        found["electricitymaps key"] = self.em_key
        return found


def _kubeconfig(path: Path, *, url: str, planted: Echoed) -> None:
    """A kubeconfig whose user has a token, a client certificate and a client key."""
    user = {
        "token": planted.base.k8s_token,
        "client-certificate-data": base64.b64encode(planted.client_cert.encode()).decode(),
        "client-key-data": base64.b64encode(planted.client_key.encode()).decode(),
    }
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "oslo", "cluster": {"server": url}}],
        "users": [{"name": "oslo-broker", "user": user}],
        "contexts": [
            {
                "name": "oslo",
                "context": {"cluster": "oslo", "user": "oslo-broker", "namespace": "gpu-broker"},
            }
        ],
        "current-context": "oslo",
    }
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")


# -- the test ----------------------------------------------------------------------------------


async def test_echoed_credentials_never_surface(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: pytest.LogCaptureFixture,  # noqa: F811
    k8s: EchoingKubernetes,
    gcp: EchoingCompute,
    moto_url: str,  # noqa: F811
    proxy: StubProxy,
    electricitymaps: tuple[FakeElectricityMaps, str],
) -> None:
    planted = Echoed()
    gcp.auth.register(planted.base.gcp_key)
    k8s.client_cert, k8s.client_key_line = planted.client_cert, planted.key_lines()[5]
    base = planted.base
    proxy.fail(
        "AuthFailure",
        status=401,
        message=(
            f"AWS was not able to validate the provided access credentials: key "
            f"{base.aws_access_key_id} secret {base.aws_secret_key} token {base.aws_session_token}"
        ),
        dry_run=None,
    )
    em, em_url = electricitymaps
    em.down = Reply(
        401,
        {
            "error": f"Invalid auth-token {planted.em_key}",
            "message": f"auth-token={planted.em_key}",
        },
    )
    monkeypatch.setenv("PLANTED_EM_KEY", planted.em_key)

    estate = write_estate(
        tmp_path, base, k8s=k8s, moto_url=moto_url, gcp=gcp, monkeypatch=monkeypatch
    )
    _kubeconfig(estate.files["kubeconfig"], url=k8s.url, planted=planted)
    config = yaml.safe_load(estate.config.read_text(encoding="utf-8"))
    for site in config["sites"]:
        if site["kind"] == "aws":
            site["connector"]["endpoint_url"] = proxy.url
        if site["kind"] == "kubernetes":
            site["connector"]["request_timeout_s"] = 1.0
    config["carbon"] = {"electricitymaps": {"api_key_env": "PLANTED_EM_KEY", "base_url": em_url}}
    estate.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    files = {name: path.read_text(encoding="utf-8") for name, path in estate.files.items()}
    assert set(leaks(files, planted.by_label(gcp))) >= {
        "k8s bearer token",
        "k8s client certificate data",
        "aws secret access key",
        "aws session token",
        "gcp private_key_id",
    }

    shown: dict[str, str] = {}
    table = await broker_check(estate, capsys)
    as_json = await broker_check(estate, capsys, "--json")
    shown |= {"check table": table.out + table.err, "check json": as_json.out + as_json.err}
    assert (table.code, as_json.code) == (1, 1)
    sites = by_site(as_json.out)
    failing = {"oslo-k8s", "aws-burst", "gcp-burst", "carbon:electricitymaps"}
    assert {name for name, s in sites.items() if not s["ok"]} == failing
    details = {name: " ".join(c["detail"] for c in s["checks"]) for name, s in sites.items()}
    # The providers' messages still come through, with the secrets cut out of them.
    assert "was refused" in details["oslo-k8s"] and "***" in details["oslo-k8s"]
    assert "AuthFailure" in details["aws-burst"] and "***" in details["aws-burst"]
    assert "invalid authentication credentials" in details["gcp-burst"]
    assert "Invalid auth-token ***" in details["carbon:electricitymaps"]

    admin = {"Authorization": f"Bearer {base.admin_token}"}
    user = {"Authorization": f"Bearer {base.user_token}"}
    async with TestClient(TestServer(create_app(load_settings(estate.config, env={})))) as client:
        for who, headers in (("admin", admin), ("user", user)):
            resp = await client.get("/v1/sites", headers=headers)
            shown[f"GET /v1/sites as {who}"] = await resp.text()
            assert resp.status == 200, shown[f"GET /v1/sites as {who}"]
        resp = await client.get("/v1/admin/providers", headers=admin)
        shown["GET /v1/admin/providers"] = await resp.text()
        assert resp.status == 200
        shown["database"] = await dump_database(client)
    shown |= log_texts(logs)

    as_admin = _reasons(shown["GET /v1/sites as admin"])
    as_user = _reasons(shown["GET /v1/sites as user"])
    assert as_user["lab-sim"] == ("healthy", "")
    for name in ("oslo-k8s", "aws-burst", "gcp-burst"):
        health, reason = as_admin[name]
        assert health in ("unreachable", "auth_failed") and len(reason) <= 300, reason
        # A user is told what kind of failure, in the broker's words only.
        assert as_user[name][1] in (
            "unreachable: authentication failed",
            "unreachable",
            "unreachable: timed out",
        ), as_user[name]
    assert "***" in as_admin["aws-burst"][1] or "***" in as_admin["oslo-k8s"][1]
    providers = {p["site"]: p["ok"] for p in json.loads(shown["GET /v1/admin/providers"])["items"]}
    assert {name for name, ok in providers.items() if not ok} == failing
    # Everything was heard: the echoing providers answered, and the broker logged it.
    assert any(name.startswith("log google") for name in shown), sorted(shown)
    assert gcp.auth.tokens and gcp.auth.bearers
    warned = " ".join(r.getMessage() for r in logs.records if r.levelno >= logging.WARNING)
    assert "***" in warned
    assert leaks(shown, planted.by_label(gcp)) == {}


def _reasons(body: str) -> dict[str, tuple[str, str]]:
    return {s["name"]: (s["health"], s["health_reason"]) for s in json.loads(body)["items"]}


# -- WattTime: login, password and bearer echoed -------------------------------------------


async def test_watttime_echoes_are_cut_everywhere(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged in, the data calls answer with the bearer token, the password and the Basic
    credential in the body (JSON and plain text, 4xx and 5xx); every message, detail and log
    record is searched for them. (The GB API takes no credentials: nothing to echo.)"""
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    clock = VirtualClock(_now())
    fake = FakeWattTime(clock)
    server = await aiohttp_server(fake.app())
    monkeypatch.setenv("PLANTED_WT", fake_watttime.PASSWORD)
    settings = WattTimeSettings(
        username=fake_watttime.USERNAME,
        password_env="PLANTED_WT",
        base_url=str(server.make_url("")).rstrip("/"),
        regions={"US-CAL-CISO": "CAISO_NORTH"},
        requests_per_second=None,
        max_attempts=1,
        cache_ttl_s=0,  # every call asks, and meets the next echo
        stale_keep_s=0,
    )
    pair = f"{fake_watttime.USERNAME}:{fake_watttime.PASSWORD}"
    basic = base64.b64encode(pair.encode()).decode()
    raised: list[SourceError] = []
    async with aiohttp.ClientSession() as session:
        source = WattTimeSource(settings, session=session, clock=clock)
        assert await source.signal_index("US-CAL-CISO") is not None  # logged in: a token
        (token,) = fake.tokens
        echoes = [
            Reply(400, {"error": f"bad token {token}", "message": f"password={pair}"}),
            Reply(403, text=f"Authorization: Basic {basic} / Bearer {token}"),
            Reply(503, {"error": f"upstream said {fake_watttime.PASSWORD} and {token}"}),
        ]
        for reply in echoes:
            fake.script("/v3/", reply)
            with pytest.raises(SourceError) as caught:
                await source.signal_index("US-CAL-CISO")
            raised.append(caught.value)
    texts = [caplog.text, *(f"{e} {e.detail}" for e in raised)]
    texts += [r.getMessage() for r in caplog.records]
    planted = [fake_watttime.PASSWORD, basic, token]
    assert not [(p, t[:200]) for t in texts for p in planted if p in t]
    assert any("bad token ***" in str(e) for e in raised)
