"""The shared redactor: registered values and their encodings, each secret shape, ordinary
text left alone, the length cap, the log record hook and the API's last net."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.api.problems import ApiProblem, problem_middleware
from broker.api.redaction import redaction_middleware
from redaction import MARK, REDACTOR, Redactor, cap
from redaction.logs import install, scrub_record

SECRET = "s3cr3t-Value_with-dashes-0123456789"
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.fixture
def r() -> Redactor:
    return Redactor()


def test_a_registered_value_is_cut_in_every_form_it_travels_in(r: Redactor) -> None:
    r.register(SECRET)
    forms = [
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
        quote(SECRET, safe=""),
    ]
    for form in forms:
        out = r.redact(f"the provider said <{form}> twice: {form}")
        assert form not in out and out.count(MARK) == 2, out


def test_a_multi_line_secret_is_cut_whole_escaped_and_line_by_line(r: Redactor) -> None:
    r.register(PEM)
    lines = [line for line in PEM.splitlines() if "-----" not in line]
    assert MARK in r.redact(PEM) and lines[0] not in r.redact(PEM)
    assert lines[1] not in r.redact(json.dumps({"private_key": PEM}))
    assert r.redact(f"line {lines[2]} of the key") == f"line {MARK} of the key"


def test_short_and_empty_values_are_not_registered(r: Redactor) -> None:
    for value in ("", None, "abc", "1234567"):
        r.register(value)
    assert len(r) == 0
    assert r.redact("abc 1234567") == "abc 1234567"


def test_the_longest_value_is_cut_first(r: Redactor) -> None:
    r.register("prefix-12345678")
    r.register("prefix-12345678-and-more")
    assert r.redact("x prefix-12345678-and-more y") == f"x {MARK} y"


def test_minted_values_are_kept_newest_first_up_to_a_bound() -> None:
    r = Redactor(keep_ephemeral=20)
    r.register("loaded-for-good-0001")
    tokens = [f"minted-token-{n:04d}" for n in range(30)]
    for token in tokens:
        r.register(token, ephemeral=True)
    out = r.redact(" ".join(tokens) + " loaded-for-good-0001")
    assert tokens[-1] not in out and "loaded-for-good-0001" not in out
    assert tokens[0] in out  # long expired: left to the shapes
    assert repr(r).startswith("Redactor(") and "minted" not in repr(r)


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("{'Authorization': 'AWS4-HMAC-SHA256 Credential=X, Signature=ab12cd34ef'}", "ab12cd34ef"),
        ("sent bearer ya29.a0AfH6SMBx-token_value", "ya29.a0AfH6SMBx-token_value"),
        ("header Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("jwt eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl in it", "c2lnbmF0dXJl"),
        (PEM, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"),
        (PEM[:150], "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"),
        ("cert LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=", "LS0tLS1CRUdJTiBDRVJU"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG"),
        ("X-Amz-Security-Token: IQoJb3JpZ2-luX2Vj", "IQoJb3JpZ2-luX2Vj"),
        ("<SessionToken>FwoGZX-IvYXdz</SessionToken>", "FwoGZX-IvYXdz"),
        ("GET /x?api_key=k-123&zone=DE", "k-123"),
        ("GET /x?zone=DE&key=k-456", "k-456"),
        ("login password=hunter2hunter2", "hunter2hunter2"),
        ('{"access_token": "ya29.tok", "expires_in": 3599}', "ya29.tok"),
        ("postgresql+asyncpg://broker:pa55word@db:5432/broker", "pa55word"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY end", "wJalrXUtnFEMI/K7MDENG"),
    ],
)
def test_each_shape_is_cut(r: Redactor, text: str, gone: str) -> None:
    out = r.redact(text)
    assert gone not in out and MARK in out, out


@pytest.mark.parametrize(
    "text",
    [
        "job-0123456789abcdef0123456789abcdef placed on oslo-k8s/H100-80GB (pool aws-burst)",
        "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 and sha256 "
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "obtain an access token: credentials rejected (invalid_grant)",
        "send Authorization: Bearer <token>",
        'WWW-Authenticate: Bearer realm="broker"',
        "basic authentication is not enabled; sort key=priority",
        "unauthorized: the API server rejected the credentials (get /version)",
        "http://127.0.0.1:8080/v1/jobs?state=running&limit=50",
        "region us-central1 is UP; zones us-central1-a, us-central1-b",
        "i-0abcdef1234567890 in us-east-1a: InsufficientInstanceCapacity",
    ],
)
def test_ordinary_text_is_left_alone(r: Redactor, text: str) -> None:
    assert r.redact(text) == text


def test_cap_flattens_and_cuts_with_an_ellipsis() -> None:
    assert cap("a  b\nc") == "a b c"
    long = cap("word " * 200, 300)
    assert len(long) == 300 and long.endswith("…")
    assert cap("short", 300) == "short"


def test_log_records_are_redacted_where_they_are_made(r: Redactor) -> None:
    r.register(SECRET)
    try:
        raise RuntimeError(f"the provider said {SECRET}")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "x",
            logging.WARNING,
            __file__,
            1,
            "failed with %s",
            (SECRET,),
            (RuntimeError, exc, None),
        )
    scrub_record(record, r)
    text = logging.Formatter().format(record)
    assert SECRET not in text and "failed with ***" in text and "RuntimeError" in text
    bad = logging.LogRecord("x", logging.INFO, __file__, 1, "%d %d", (SECRET,), None)
    scrub_record(bad, r)  # arguments that do not fit are kept, redacted
    assert SECRET not in bad.getMessage()


def test_the_installed_hook_reaches_every_handler(caplog: pytest.LogCaptureFixture) -> None:
    install()
    install()  # once only
    REDACTOR.register(SECRET)
    logging.getLogger("any.library").warning("token %s", SECRET)
    assert SECRET not in caplog.text and "token ***" in caplog.text


async def test_problem_documents_are_redacted_as_a_last_net() -> None:
    REDACTOR.register(SECRET)

    async def failing(request: web.Request) -> web.Response:
        raise ApiProblem(status=502, slug="upstream", title="Upstream", detail=f"said {SECRET}")

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({"echo": "nothing secret"})

    app = web.Application(middlewares=[redaction_middleware, problem_middleware])
    app.router.add_get("/fail", failing)
    app.router.add_get("/fine", fine)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/fail")
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 502 and body["detail"] == "said ***"
        assert resp.content_type == "application/problem+json"
        assert await (await client.get("/fine")).json() == {"echo": "nothing secret"}
