"""A stub proxy in front of moto's server: answers chosen calls with real AWS error bodies.

moto never runs out of capacity, never throttles and accepts any key, so the paths the
connector takes on those answers need another source. The proxy speaks plain HTTP: it reads
each query-protocol request (EC2 and STS both send `Action=...&...` form bodies), and either
answers with the error document the real service sends, with the real HTTP status, answers
with a canned success body (spot price histories moto cannot vary), or forwards the request
byte for byte to moto. SigV4 signatures survive because the Host header
and body are passed on unchanged.

Error documents:
* EC2: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
  `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`
* STS (query protocol): `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`
"""

from __future__ import annotations

import http.client
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
}


@dataclass
class Fault:
    """Answer matching calls with `code`/`status`; `times=None` means every matching call.
    `dry_run`: False matches real calls only (EC2 reports capacity on real launches, never on
    DryRun), True dry runs only, None both (a permission error answers both)."""

    code: str
    status: int
    action: str | None = None
    zone: str | None = None
    times: int | None = None
    message: str = "injected by the test proxy"
    dry_run: bool | None = False


@dataclass(frozen=True)
class Call:
    """One request the proxy saw, and the status it answered with."""

    service: str
    action: str
    zone: str | None
    client_token: str | None
    dry_run: bool
    status: int


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    throttled: int = 0
    rejecting: bool = False
    canned: dict[str, bytes] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)


class StubProxy:
    """Forwards to `target` (a moto server URL) except where told to fail."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._state = _State()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # `stop` waits up to one poll
            name="aws-stub-proxy",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def fail(
        self,
        code: str,
        *,
        status: int,
        action: str | None = None,
        zone: str | None = None,
        times: int | None = None,
        message: str = "injected by the test proxy",
        dry_run: bool | None = False,
    ) -> None:
        with self._lock:
            self._state.faults.append(
                Fault(
                    code,
                    status,
                    action=action,
                    zone=zone,
                    times=times,
                    message=message,
                    dry_run=dry_run,
                )
            )

    def answer(self, action: str, body: str) -> None:
        """Answer every `action` call with this 200 body instead of moto's."""
        with self._lock:
            self._state.canned[action] = body.encode()

    def throttle(self, calls: int) -> None:
        with self._lock:
            self._state.throttled += calls

    def reject_credentials(self) -> None:
        with self._lock:
            self._state.rejecting = True

    def calls(self, action: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._state.calls if action is None or c.action == action]

    def _decide(
        self, service: str, action: str, zone: str | None, dry_run: bool
    ) -> tuple[int, str, str] | None:
        """(status, code, message) to answer with, or None to forward."""
        with self._lock:
            state = self._state
            if state.rejecting:
                if service == "sts":
                    return (
                        403,
                        "InvalidClientTokenId",
                        "The security token included in the request is invalid.",
                    )
                return (
                    401,
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                )
            if state.throttled > 0:
                state.throttled -= 1
                if service == "sts":
                    return 400, "Throttling", "Rate exceeded"
                return 503, "RequestLimitExceeded", "Request limit exceeded."
            for fault in state.faults:
                if fault.action not in (None, action) or fault.zone not in (None, zone):
                    continue
                if fault.dry_run not in (None, dry_run):
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault.status, fault.code, fault.message
        return None

    def _canned(self, action: str) -> bytes | None:
        with self._lock:
            return self._state.canned.get(action)

    def _record(self, call: Call) -> None:
        with self._lock:
            self._state.calls.append(call)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so stopping never waits on a kept-alive
            # connection held open by botocore's pool.
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                params = parse_qs(body.decode("utf-8", "replace"))
                found = _SERVICE.search(self.headers.get("Authorization", ""))
                service = found.group(1) if found else "unknown"
                action = params.get("Action", [""])[0]
                zone = params.get("Placement.AvailabilityZone", [None])[0]
                token = params.get("ClientToken", [None])[0]
                dry_run = params.get("DryRun", ["false"])[0] == "true"
                decision = proxy._decide(service, action, zone, dry_run)
                canned = proxy._canned(action)
                if decision is None and canned is not None:
                    status = 200
                    self._answer(status, canned)
                elif decision is None:
                    status = self._forward(body)
                else:
                    status, code, message = decision
                    self._answer(status, _error_body(service, code, message))
                proxy._record(Call(service, action, zone, token, dry_run, status))

            def _forward(self, body: bytes) -> int:
                conn = http.client.HTTPConnection(*proxy._target, timeout=30)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return resp.status
                finally:
                    conn.close()

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _error_body(service: str, code: str, message: str) -> bytes:
    request_id = str(uuid.uuid4())
    code, message = escape(code), escape(message)
    if service == "sts":
        text = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    else:
        text = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    return text.encode()
