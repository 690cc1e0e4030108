"""Query-string parsing shared by the routes: one problem per bad parameter, named.

A parameter given empty (`?cursor=`, `?from=`) counts as absent, as the OpenAPI document
says: an HTML form or a shell variable that expanded to nothing sends it that way.
"""

from __future__ import annotations

from collections.abc import Set
from datetime import UTC, datetime, timedelta

from aiohttp import web

from broker.api.problems import ApiProblem, validation_problem
from broker.api.schemas import ProblemField
from broker.domain.bounds import TIME_RANGE, ascii_int, time_in_range

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


def given(request: web.Request, name: str) -> str | None:
    """The parameter's value; None when absent or empty."""
    return request.query.get(name) or None


def integer(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    """An integer in [lo, hi] written in ASCII digits (`int` also reads "²" or "٣")."""
    raw = given(request, name)
    if raw is None:
        return default
    value = ascii_int(raw, lo=lo, hi=hi)
    if value is None:
        raise field_problem(name, "range", f"an integer from {lo} to {hi}")
    return value


def moment(request: web.Request, name: str) -> datetime | None:
    """An RFC 3339 time with its offset, in UTC; None when absent."""
    raw = given(request, name)
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
    if not time_in_range(value):  # checked before the conversion to UTC, which could overflow
        raise field_problem(name, "range", TIME_RANGE)
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
