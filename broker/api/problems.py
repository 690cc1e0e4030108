"""RFC 9457 problem documents: every error the API returns, and the middleware that
guarantees nothing else (no HTML error page, no traceback) ever reaches a client.

`type` is a relative URI naming the reason (`/problems/validation-error`), stable for
scripts to branch on; `title` is its human summary; `detail` says what happened here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pydantic_core
import sqlalchemy.exc
from aiohttp import web
from pydantic import BaseModel, ValidationError

from broker.api.schemas import Problem, ProblemField

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

M = TypeVar("M", bound=BaseModel)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiProblem(Exception):
    def __init__(
        self,
        *,
        status: int,
        slug: str,
        title: str,
        detail: str,
        errors: Sequence[ProblemField] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = Problem(
            type=f"/problems/{self.slug}",
            title=self.title,
            status=self.status,
            detail=self.detail,
            errors=self.errors,
        )
        return web.Response(
            status=self.status,
            headers=self.headers,
            content_type=PROBLEM_JSON,
            text=body.model_dump_json(exclude_none=True),
        )


def validation_problem(errors: Sequence[ProblemField], detail: str | None = None) -> ApiProblem:
    return ApiProblem(
        status=422,
        slug="validation-error",
        title="The request is not valid",
        detail=detail or "; ".join(f"{e.field}: {e.message}" for e in errors),
        errors=errors,
    )


def not_found(detail: str) -> ApiProblem:
    return ApiProblem(status=404, slug="not-found", title="Not found", detail=detail)


def _fields(exc: ValidationError) -> list[ProblemField]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        out.append(ProblemField(field=loc, message=err["msg"], type=err["type"]))
    return out


async def read_model(request: web.Request, model: type[M]) -> M:
    """Parse the JSON body into `model`: 415, 413, 400 or 422 when it cannot."""
    body = await read_json_bytes(request)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_problem(_fields(exc)) from None


def validate_into(model: type[M], data: Any) -> M:
    """Validate plain JSON data (a merged PATCH, say) into `model`, or a 422."""
    try:
        return model.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        raise validation_problem(_fields(exc)) from None


MERGE_PATCH = "application/merge-patch+json"  # RFC 7386


async def read_json(request: web.Request, *, media: tuple[str, ...] = ("application/json",)) -> Any:
    """The body as JSON data (of one of the `media` types): 415, 413 or 400 otherwise."""
    return pydantic_core.from_json(await read_json_bytes(request, media=media), allow_inf_nan=False)


async def read_json_bytes(
    request: web.Request, *, media: tuple[str, ...] = ("application/json",)
) -> bytes:
    """The body, checked to be JSON: 415, 413 or 400 when it is not."""
    if request.content_type not in media:
        raise ApiProblem(
            status=415,
            slug="unsupported-media-type",
            title="Unsupported media type",
            detail=f"send {' or '.join(media)}, not {request.content_type or 'nothing'}",
        )
    body = await request.read()  # raises 413 past client_max_size
    try:
        # The parser `model_validate_json` uses, so both agree on what JSON is; unlike
        # `json.loads` it caps nesting (at 200) without recursing on the C stack, and
        # refuses NaN and Infinity, which RFC 8259 does not have.
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        raise ApiProblem(
            status=400, slug="malformed-json", title="The body is not valid JSON", detail=str(exc)
        ) from None
    return body


_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return ApiProblem(
            status=exc.status,
            slug=_HTTP_SLUGS.get(exc.status, "http-error"),
            title=exc.reason,
            detail=detail,
            headers=headers,
        ).response()
    except sqlalchemy.exc.TimeoutError:
        # Every database connection stayed busy for the pool's timeout: the broker is
        # overloaded, not broken. Say so, and when to retry, without a traceback.
        log.warning("overloaded: no database connection for %s %s", request.method, request.path)
        return ApiProblem(
            status=503,
            slug="overloaded",
            title="The broker is overloaded",
            detail="no database connection came free in time; retry shortly",
            headers={"Retry-After": "2"},
        ).response()
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.rel_url.path)
        return ApiProblem(
            status=500,
            slug="internal-error",
            title="Internal error",
            detail="the broker hit an unexpected error; it has been logged",
        ).response()


def problem_schema() -> dict[str, Any]:
    return Problem.model_json_schema()
