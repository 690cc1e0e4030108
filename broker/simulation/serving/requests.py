"""Request traces: arrival times and token counts, read from CSV, and the load they offer.

Accepted columns (case-insensitive), so an Azure LLM trace reads as it is published:

* the arrival: `TIMESTAMP` / `timestamp` (ISO 8601; without an offset it is taken as UTC,
  as the Azure trace's README says to) or `arrival_s` (seconds from any origin, which is
  then placed at `--start`);
* `ContextTokens` / `context_tokens` / `prompt_tokens`;
* `GeneratedTokens` / `generated_tokens` / `output_tokens`.

`offered_concurrency` is the load a service would show with unlimited replicas: per
minute, the request-seconds of service that arrive in it divided by 60 (Little's law).
`synthetic_history` builds the days before the trace for the load forecaster from it: a
stated overlay, never a measurement (see its docstring).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from broker.domain.autoscale import LoadSample
from broker.domain.errors import BrokerError
from broker.simulation.serving.rates import ServingRates

__all__ = [
    "Request",
    "RequestTrace",
    "TraceError",
    "daily_factor",
    "daily_overlay",
    "offered_concurrency",
    "read_requests",
    "synthetic_history",
]

_TIME = ("timestamp",)
_SECONDS = ("arrival_s",)
_CONTEXT = ("contexttokens", "context_tokens", "prompt_tokens")
_GENERATED = ("generatedtokens", "generated_tokens", "output_tokens")


class TraceError(BrokerError):
    """A request trace that cannot be replayed; the message says which row and why."""


@dataclass(frozen=True, slots=True)
class Request:
    at_s: float  # seconds from the trace's start (its first minute)
    context_tokens: int
    generated_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestTrace:
    start: datetime  # the first request's minute, UTC: the replay's time zero
    requests: tuple[Request, ...]  # by arrival

    @property
    def minutes(self) -> int:
        """Whole minutes from `start` to the last arrival's minute, inclusive."""
        return int(self.requests[-1].at_s // 60) + 1 if self.requests else 0


def _column(header: Sequence[str], names: Sequence[str]) -> str | None:
    for h in header:
        if h.strip().lower() in names:
            return h
    return None


def read_requests(path: Path, *, start: datetime | None = None) -> RequestTrace:
    """The trace at `path`; `start` places `arrival_s` traces (default 2000-01-01 UTC)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TraceError(f"trace {path} is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise TraceError(f"trace {path} is not valid CSV: {exc}") from exc
    when = _column(header, _TIME)
    seconds = _column(header, _SECONDS)
    context = _column(header, _CONTEXT)
    generated = _column(header, _GENERATED)
    if (when is None and seconds is None) or context is None or generated is None:
        raise TraceError(
            f"trace {path} needs an arrival column (TIMESTAMP or arrival_s), ContextTokens "
            f"and GeneratedTokens; it has {', '.join(header) or 'no header'}"
        )
    if not rows:
        raise TraceError(f"trace {path} has no requests")
    parsed: list[tuple[float, int, int]] = []
    origin = (start or datetime(2000, 1, 1, tzinfo=UTC)).astimezone(UTC)
    for line, row in enumerate(rows, start=2):
        try:
            if when is not None:
                moment = datetime.fromisoformat(row[when].strip())
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                at = moment.timestamp()
            else:
                assert seconds is not None
                at = origin.timestamp() + float(row[seconds])
            ctx, gen = int(row[context]), int(row[generated])
        except (ValueError, TypeError, AttributeError) as exc:
            raise TraceError(f"trace {path} line {line}: {exc}") from None
        if not math.isfinite(at) or ctx < 0 or gen < 0:
            raise TraceError(f"trace {path} line {line}: negative tokens or a bad time")
        parsed.append((at, ctx, gen))
    parsed.sort(key=lambda r: r[0])
    first = datetime.fromtimestamp(parsed[0][0], tz=UTC).replace(second=0, microsecond=0)
    zero = first.timestamp()
    return RequestTrace(
        start=first,
        requests=tuple(Request(at - zero, ctx, gen) for at, ctx, gen in parsed),
    )


def offered_concurrency(trace: RequestTrace, *, rates: ServingRates) -> list[float]:
    """Per minute of the trace, the requests in service with unlimited replicas (mean)."""
    busy = np.zeros(trace.minutes)
    for r in trace.requests:
        busy[int(r.at_s // 60)] += rates.service_s(
            context_tokens=r.context_tokens, generated_tokens=r.generated_tokens
        )
    return [float(v) / 60.0 for v in busy]


def daily_factor(hour: float, *, trough: float = 0.3) -> float:
    """A synthetic daily curve: 1 at 15:00 UTC, `trough` at 03:00, a cosine between."""
    return trough + (1 - trough) * (1 + math.cos(2 * math.pi * (hour - 15) / 24)) / 2


def daily_overlay(
    trace: RequestTrace,
    *,
    days: int,
    trough: float = 0.3,
    active_hours: tuple[int, int] | None = None,
    seed: int = 0,
) -> RequestTrace:
    """`days` of requests from `trace` on the assumed daily curve: a SYNTHETIC overlay.

    Made as `synthetic_history` makes its load, but of requests (their real token counts
    and their real burstiness): each hour of the result, from the trace's first minute, is
    the trace looped over its own length and rotated by a random whole number of minutes
    (seeded), thinned (or, above the trace's level, layered with further rotated copies)
    to ``daily_factor(hour) / daily_factor(hour of the trace's start)`` of the trace's
    rate. So the trace's own hour keeps its level, the assumed curve sets the others, and
    a trough of 0 gives the night idle minutes. `active_hours` (start, end), UTC hours,
    keeps only the requests between them (a service used in working hours: idle
    periods every night). Never data: every figure made from it says so.
    """
    if days <= 0:
        raise TraceError("the overlay needs at least one day")
    if not 0 <= trough <= 1:
        raise TraceError("the overlay's trough must be in [0, 1]")
    if active_hours is not None and not (
        all(0 <= h <= 24 for h in active_hours) and active_hours[0] != active_hours[1]
    ):
        raise TraceError("active hours must be two different hours from 0 to 24")
    period = float(trace.minutes * 60)
    if not trace.requests or period <= 0:
        raise TraceError("the trace has no requests to overlay")
    rng = np.random.default_rng(seed)
    anchor_hour = trace.start.hour + trace.start.minute / 60
    anchor = daily_factor(anchor_hour, trough=trough)
    if anchor <= 0:
        raise TraceError("the trace's own hour falls at a trough of 0: nothing to scale from")
    top = 1 / anchor  # the busiest hour's rate, in multiples of the trace's
    layers = math.ceil(top - 1e-9)
    base = np.array([r.at_s for r in trace.requests])
    out: list[Request] = []
    for h in range(days * 24):
        hour_s = h * 3600.0
        for layer in range(layers):
            shift = float(rng.integers(0, trace.minutes)) * 60.0
            # the trace looped over its length, rotated: offsets in [0, 3600)
            offsets = np.concatenate(
                [(base - shift) % period + k * period for k in range(math.ceil(3600 / period))]
            )
            src = np.concatenate([np.arange(len(base)) for _ in range(math.ceil(3600 / period))])
            inside = offsets < 3600.0
            offsets, src = offsets[inside], src[inside]
            hours = anchor_hour + (hour_s + offsets) / 3600.0
            curve = (1 + np.cos(2 * np.pi * (hours - 15) / 24)) / 2  # as `daily_factor`
            level = (trough + (1 - trough) * curve) / anchor
            keep = rng.random(len(offsets)) < np.clip(level - layer, 0.0, 1.0)
            if active_hours is not None:
                of_day = hours % 24
                lo, hi = active_hours
                keep &= (
                    (lo <= of_day) & (of_day < hi) if lo < hi else (of_day >= lo) | (of_day < hi)
                )
            for at, i in zip(offsets[keep], src[keep], strict=True):
                r = trace.requests[int(i)]
                out.append(Request(hour_s + float(at), r.context_tokens, r.generated_tokens))
    out.sort(key=lambda r: r.at_s)
    return RequestTrace(start=trace.start, requests=tuple(out))


def _active(hour: int, active_hours: tuple[int, int]) -> bool:
    lo, hi = active_hours
    return lo <= hour < hi if lo < hi else (hour >= lo or hour < hi)


def synthetic_history(
    per_minute: Sequence[float],
    *,
    start: datetime,
    days: int,
    seed: int = 0,
    trough: float = 0.3,
    active_hours: tuple[int, int] | None = None,
) -> list[LoadSample]:
    """`days` of per-minute load before `start`, labelled synthetic.

    Every hour of it is the trace's own minutes (looped to an hour), rotated by a random
    whole number of minutes (seeded), times ``daily_factor(hour) / daily_factor(hour of
    start)``: the trace's level and burstiness, on a daily cycle that is an assumption,
    not data. The rotation keeps the history from holding the replayed hour minute for
    minute, so a forecast cannot just read the answer from "yesterday". `trough` and
    `active_hours` shape it as `daily_overlay` shapes the replayed days, so a replay of an
    overlay learns from a history of the same kind.
    """
    if days <= 0 or not per_minute:
        return []
    rng = np.random.default_rng(seed)
    hour_profile = [per_minute[m % len(per_minute)] for m in range(60)]
    anchor = daily_factor(start.hour + start.minute / 60, trough=trough)
    first = start - timedelta(days=days)
    out: list[LoadSample] = []
    for h in range(days * 24):
        shift = int(rng.integers(0, 60))
        hour_start = first + timedelta(hours=h)
        scale = daily_factor(hour_start.hour + hour_start.minute / 60, trough=trough) / anchor
        for m in range(60):
            at = hour_start + timedelta(minutes=m)
            value = hour_profile[(m + shift) % 60] * scale
            if active_hours is not None and not _active(at.hour, active_hours):
                value = 0.0
            out.append(LoadSample(hour_start + timedelta(minutes=m, seconds=30), value))
    return out
