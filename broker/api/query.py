"""Query-string parsing shared by the routes: one problem per bad parameter, named."""

from __future__ import annotations

from collections.abc import Set
from datetime import UTC, datetime, timedelta

from aiohttp import web

from broker.api.problems import ApiProblem, validation_problem
from broker.api.schemas import ProblemField

MAX_SPAN = timedelta(days=366)


def field_problem(field: str, kind: str, message: str) -> ApiProblem:
    """A 422 about one parameter."""
    return validation_problem([ProblemField(field=field, type=kind, message=message)])


def reject_unknown(request: web.Request, allowed: Set[str]) -> None:
    """A 422 naming every query parameter the route does not take."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise validation_problem(
            [
                ProblemField(field=n, type="unknown_parameter", message="unknown query parameter")
                for n in unknown
            ]
        )


def moment(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 time with its offset, in UTC; None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise field_problem(
            name, "datetime", "an RFC 3339 time, e.g. 2026-11-01T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise field_problem(name, "datetime", "needs a UTC offset, e.g. Z or +01:00")
    return value.astimezone(UTC)


def period(
    request: web.Request, *, now: datetime, default_span: timedelta, too_long: str
) -> tuple[datetime, datetime]:
    """`from` and `to` (defaults: `to` = now, `from` = `to` - default_span), checked."""
    end = moment(request, "to") or now
    start = moment(request, "from") or end - default_span
    if start >= end:
        raise field_problem("from", "range", "must be before `to`")
    if end - start > MAX_SPAN:
        raise field_problem("from", "range", too_long)
    return start, end
