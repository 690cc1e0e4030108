"""`GET /v1/jobs/{id}/logs`: a job's output as text/plain, read from its site's connector.

Tenant-scoped like every job read (another tenant's job is a 404; operators and admins read
any). The output is the current (latest) placement's run: the pod's log on Kubernetes,
synthetic lines on the demo fleet (`connectors.sim.logs`); a site whose connector lacks
LOGS says so with a 409, as does a job that never started. Limits: `tail` is at most
`MAX_TAIL` lines (default `DEFAULT_TAIL`); a follow streams at most `MAX_FOLLOW_BYTES`
and then ends with a line saying so (reconnect with `tail=0` to go on), and ends when the
run ends or the client goes away (checked every `IDLE_CHECK_S` while the job is quiet).

A follow's first read (finding the pod, the first lines) gets `FIRST_READ_S` to fail as a
problem document; after that the response has started, so a later error ends the stream
with a last line naming it (redacted, as every connector error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from broker.api.admission import valid_id
from broker.api.context import principal
from broker.api.keys import CONNECTORS, STORE
from broker.api.problems import ApiProblem, not_found
from broker.api.query import field_problem, given, integer, reject_unknown
from broker.domain.enums import Ability
from broker.domain.errors import JobNotFound
from connectors.errors import ConnectorError, NotFound
from redaction import cap, redact

routes = web.RouteTableDef()

PARAMS = frozenset({"tail", "follow"})
DEFAULT_TAIL = 1000
MAX_TAIL = 10_000
MAX_FOLLOW_BYTES = 64 * 1024 * 1024
FIRST_READ_S = 2.0
IDLE_CHECK_S = 5.0
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _follow(request: web.Request) -> bool:
    raw = given(request, "follow")
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise field_problem("follow", "boolean", "true or false")


@routes.get("/v1/jobs/{job_id}/logs")
async def job_logs(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    job_id = valid_id(request, "job_id")
    reject_unknown(request, PARAMS)
    tail = integer(request, "tail", default=DEFAULT_TAIL, lo=0, hi=MAX_TAIL)
    follow = _follow(request)
    try:
        detail = await request.app[STORE].get_job(
            job_id, tenant=None if who.sees_all_tenants() else who.tenant
        )
    except JobNotFound:
        raise not_found(f"no job {job_id}") from None
    placement = detail.placement
    if placement is None or placement.started_at is None:
        raise ApiProblem(
            status=409,
            slug="job-never-ran",
            title="The job has not run",
            detail=f"job {job_id} is {detail.job.state.value} and has not started on a site; "
            "it has no output yet",
        )
    connector = request.app.get(CONNECTORS, {}).get(placement.site)
    if connector is None or not connector.supports(Ability.LOGS):
        why = "is not configured here" if connector is None else "cannot read a job's output"
        raise ApiProblem(
            status=409,
            slug="logs-unavailable",
            title="The job's output cannot be read",
            detail=f"job {job_id} ran on site {placement.site}, which {why}",
        )
    lines = connector.logs(job=detail.job, placement=placement, tail=tail, follow=follow)
    try:
        if not follow:
            text = "".join([f"{line}\n" async for line in lines])
            return web.Response(text=text, content_type="text/plain", charset="utf-8")
        return await _stream(request, lines)
    except NotFound as exc:
        raise ApiProblem(
            status=409,
            slug="logs-gone",
            title="The job's output is gone",
            detail=f"job {job_id}: {exc}",
        ) from None
    except ConnectorError as exc:
        raise ApiProblem(
            status=502,
            slug="site-error",
            title="The site could not give the job's output",
            detail=str(exc),
        ) from None
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


async def _stream(request: web.Request, lines: AsyncIterator[str]) -> web.StreamResponse:
    """Chunked text/plain, a line at a time, within the limits the module states."""
    opening = asyncio.ensure_future(_next(lines))
    pending: asyncio.Task[str | None] | None = opening
    try:
        # The first read fails as a problem document (raised here) if it fails at once.
        first = await _within(opening, FIRST_READ_S)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        if first is not _QUIET:
            pending = None
            if first is None:
                return await _end(resp)
            assert isinstance(first, str)
            sent += await _write(resp, first)
        while sent < MAX_FOLLOW_BYTES:
            if pending is None:
                pending = asyncio.ensure_future(_next(lines))
            try:
                line = await _within(pending, IDLE_CHECK_S)
            except ConnectorError as exc:
                pending = None
                cut = cap(redact(str(exc)), 300)
                await _write(resp, f"[broker] the output stream ended: {cut}")
                return await _end(resp)
            if line is _QUIET:
                if request.transport is None or request.transport.is_closing():
                    return resp  # the client went away
                continue
            pending = None
            if line is None:
                return await _end(resp)
            assert isinstance(line, str)
            sent += await _write(resp, line)
        await _write(
            resp,
            f"[broker] this follow reached its {MAX_FOLLOW_BYTES // 2**20} MiB limit; "
            "follow again with tail=0 to read on",
        )
        return await _end(resp)
    except ConnectionResetError:
        return web.StreamResponse()  # the client went away mid-write
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


_QUIET = object()  # nothing came within the wait


async def _within(task: asyncio.Task[str | None], wait_s: float) -> str | object | None:
    """The task's line (None: the end), raising its error; `_QUIET` if it is not done yet."""
    done, _ = await asyncio.wait({task}, timeout=wait_s)
    return task.result() if done else _QUIET


async def _next(lines: AsyncIterator[str]) -> str | None:
    try:
        return await anext(lines)
    except StopAsyncIteration:
        return None


async def _end(resp: web.StreamResponse) -> web.StreamResponse:
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def _write(resp: web.StreamResponse, line: str) -> int:
    data = f"{line}\n".encode()
    await resp.write(data)
    return len(data)
