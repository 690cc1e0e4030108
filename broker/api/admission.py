"""What jobs and services share on the way in: an Idempotency-Key, known GPU models, a
fleet that could ever run the work, and path ids the store can be asked about."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from broker.api.keys import LOOP
from broker.api.problems import ApiProblem, not_found, validation_problem
from broker.api.schemas import ProblemField
from broker.domain.bounds import storable
from broker.domain.placement import Evaluation
from carbon.power import GPU_MODELS

MAX_ID = 255
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key, or a 422 for one no store could keep."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise validation_problem(
            [
                ProblemField(
                    field="Idempotency-Key",
                    type="invalid_header",
                    message=f"1 to {MAX_IDEMPOTENCY_KEY} printable characters",
                )
            ]
        )
    return key


def key_reused(*, what: str, earlier: str) -> ApiProblem:
    """The 409 for a key that already created `earlier` with another body."""
    return ApiProblem(
        status=409,
        slug="idempotency-key-reused",
        title="Idempotency-Key reused with a different request",
        detail=f"this key already created {what} {earlier} with another body",
    )


async def known_models(request: web.Request) -> set[str]:
    return set(GPU_MODELS) | await request.app[LOOP].known_gpu_models()


def model_errors(models: Sequence[str], known: set[str]) -> list[ProblemField]:
    return [
        ProblemField(
            field=f"resources.gpu_models.{i}",
            type="unknown_gpu_model",
            message=f"unknown GPU model {model!r}; known: " + ", ".join(sorted(known)),
        )
        for i, model in enumerate(models)
        if model not in known
    ]


def check_models(models: Sequence[str], known: set[str]) -> None:
    errors = model_errors(models, known)
    if errors:
        raise validation_problem(errors)


def check_satisfiable(ev: Evaluation, *, what: str = "job") -> None:
    """A 422 naming every site's reason when no site in the fleet could ever run `what`."""
    if ev.candidates:
        return
    errors = [
        ProblemField(
            field="resources",
            type=f"unschedulable.{r.reason.value}",
            message=f"{r.site} ({r.pool_id}): {r.detail}",
        )
        for r in ev.rejections
    ]
    raise validation_problem(
        errors or [ProblemField(field="resources", type="unschedulable", message="no sites")],
        detail=f"no site in the fleet can ever run this {what}",
    )


def valid_id(request: web.Request, name: str) -> str:
    """The path's id; a 404 for one nothing can have (a NUL byte, which PostgreSQL refuses
    in a query, an undecodable byte, a mile-long id), before the store sees it."""
    value = request.match_info[name]
    if not (len(value) <= MAX_ID and value.isprintable() and storable(value)):
        raise not_found("no such " + name.removesuffix("_id"))
    return value
