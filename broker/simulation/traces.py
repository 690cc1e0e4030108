"""The canonical job-trace CSV that the simulator replays.

One row per job, UTF-8, comma-separated, with a header naming exactly these columns (any
order when read; this order when written):

| column | type | meaning |
|---|---|---|
| `job_id` | text, unique | the job's name in the trace |
| `submit_s` | float ≥ 0 | submission time, seconds from the start of the trace |
| `duration_s` | int > 0 | actual run time in seconds once placed (not an estimate) |
| `gpus` | int ≥ 0 | GPUs **per node**; 0 only for a CPU-only job (then `cpu` > 0) |
| `gpu_fraction` | empty, or 0 < f < 1 | a share of one GPU; then `gpus` must be 1 and `nodes` 1 |
| `nodes` | int ≥ 1 | nodes of a gang job; all must be placed at once |
| `gpu_models` | `\\|`-separated | allowed GPU models (`H100\\|A100-80GB`); empty = any |
| `tier` | P1/P2/P3 | priority tier |
| `tenant` | text | the team that owns the job |
| `deadline_s` | empty, or float ≥ submit_s | absolute deadline, seconds from the trace start |
| `origin` | empty, or `cloud:region` | where the requests come from (a `config/latency.csv` key) |
| `preemptible` | true/false/empty | empty = the tier's default (only P3 is preemptible) |
| `kind` | inference/training/experiment | what the job does |
| `cpu` | optional: empty, or float ≥ 0 | CPU cores **per node**; empty or 0 = not stated |
| `memory_gb` | optional: empty, or float ≥ 0 | GB of memory **per node**; empty or 0 = not stated |

The last two columns are optional when read (a 13-column file from before they existed
still reads, every job with 0 = not stated) and always written. A row with `gpus` = 0 is a
CPU-only job: it needs `cpu` > 0 and runs on a GPU node's CPUs and memory.

A job that needs more GPUs than one node holds is written as a gang: `nodes = ceil(total /
gpus_per_node)` and `gpus = ceil(total / nodes)` (so 16 GPUs on 8-GPU nodes is 2 × 8, and
12 GPUs is 2 × 6). Rows are sorted by `submit_s`; ties keep their order in the file.

`read_trace` checks every cell and names the file, line and column of the first bad one in
a `TraceError`; `write_trace` writes the canonical form, so reading what was written gives
the same jobs back. Only the standard library is used, so converters and the simulator can
share this module without pulling in the service layers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from broker.demand.history import ANY_MODEL, DemandRecord
from broker.domain.enums import JobKind, Tier
from broker.domain.errors import BrokerError

_T = TypeVar("_T")

COLUMNS: tuple[str, ...] = (
    "job_id",
    "submit_s",
    "duration_s",
    "gpus",
    "gpu_fraction",
    "nodes",
    "gpu_models",
    "tier",
    "tenant",
    "deadline_s",
    "origin",
    "preemptible",
    "kind",
    "cpu",
    "memory_gb",
)
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"cpu", "memory_gb"})
"""Columns a trace may leave out (files written before they existed); an absent one reads as 0."""


class TraceError(BrokerError, ValueError):
    """A trace file or a trace job is malformed; the message names the line and column."""

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


class _InvalidJob(TraceError):
    """A `TraceJob` broke a rule when built; the reader adds the line number."""

    def __init__(self, *, job_id: str, column: str, reason: str) -> None:
        super().__init__(f"job {job_id!r}: column {column!r}: {reason}", column=column)
        self.reason = reason


class _CellError(ValueError):
    """One cell (or one cross-field rule) is wrong; `column` says which."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceJob:
    """One job of a replay trace; see the module docstring for each field's meaning."""

    job_id: str
    submit_s: float
    duration_s: int
    gpus: int
    gpu_fraction: float | None
    nodes: int
    gpu_models: tuple[str, ...]
    tier: Tier
    tenant: str
    deadline_s: float | None
    origin: str | None
    preemptible: bool | None
    kind: JobKind
    cpu: float = 0.0  # cores per node; 0 = not stated
    memory_gb: float = 0.0  # GB per node; 0 = not stated

    def __post_init__(self) -> None:
        try:
            _validate(self)
        except _CellError as exc:
            raise _InvalidJob(job_id=self.job_id, column=exc.column, reason=str(exc)) from None

    @property
    def gpu_total(self) -> float:
        """GPUs held by the whole job (a fraction counts as that share of one GPU)."""
        return self.gpu_fraction if self.gpu_fraction is not None else float(self.gpus * self.nodes)

    @property
    def cpu_only(self) -> bool:
        """The job asks for no GPU, only CPU (and memory) on GPU nodes."""
        return self.gpus == 0


def _validate(job: TraceJob) -> None:
    if not job.job_id:
        raise _CellError("job_id", "must not be empty")
    if not (math.isfinite(job.submit_s) and job.submit_s >= 0):
        raise _CellError("submit_s", f"must be a finite number ≥ 0, got {job.submit_s}")
    if job.duration_s <= 0:
        raise _CellError("duration_s", f"must be > 0, got {job.duration_s}")
    for column, amount in (("cpu", job.cpu), ("memory_gb", job.memory_gb)):
        if not (math.isfinite(amount) and amount >= 0):
            raise _CellError(column, f"must be a finite number ≥ 0, got {amount}")
    if job.gpus < 0:
        raise _CellError("gpus", f"must be ≥ 1 (or 0 for a CPU-only job), got {job.gpus}")
    if job.gpus == 0 and job.cpu <= 0:
        raise _CellError("gpus", "is 0 but cpu is 0 or empty: a CPU-only job must request cpu > 0")
    if job.nodes < 1:
        raise _CellError("nodes", f"must be ≥ 1, got {job.nodes}")
    if job.gpu_fraction is not None:
        if not 0 < job.gpu_fraction < 1:
            raise _CellError("gpu_fraction", f"must be between 0 and 1, got {job.gpu_fraction}")
        if job.gpus != 1 or job.nodes != 1:
            raise _CellError("gpu_fraction", "a fractional job must have gpus = 1 and nodes = 1")
    if any(not m or m != m.strip() or "|" in m for m in job.gpu_models):
        raise _CellError("gpu_models", f"bad model list {job.gpu_models!r}")
    if not job.tenant:
        raise _CellError("tenant", "must not be empty")
    if job.deadline_s is not None and not (
        math.isfinite(job.deadline_s) and job.deadline_s >= job.submit_s
    ):
        raise _CellError("deadline_s", f"must be ≥ submit_s ({job.submit_s}), got {job.deadline_s}")
    if job.origin is not None:
        cloud, sep, region = job.origin.partition(":")
        if not (cloud and sep and region):
            raise _CellError("origin", f"must look like 'aws:us-east-1', got {job.origin!r}")


# Reading: one parser per column, each raising ValueError with a short reason.


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _opt_float(text: str) -> float | None:
    return None if text == "" else _float(text)


def _amount(text: str) -> float:
    """An optional resource amount: empty = 0 (not stated)."""
    return 0.0 if text == "" else _float(text)


def _opt_text(text: str) -> str | None:
    return text or None


def _models(text: str) -> tuple[str, ...]:
    if text == "":
        return ()
    models = tuple(m.strip() for m in text.split("|"))
    if any(not m for m in models):
        raise ValueError(f"empty model name in {text!r}")
    return models


def _tier(text: str) -> Tier:
    try:
        return Tier(text)
    except ValueError:
        raise ValueError(f"tier must be one of P1, P2, P3, got {text!r}") from None


def _kind(text: str) -> JobKind:
    try:
        return JobKind(text)
    except ValueError:
        allowed = ", ".join(k.value for k in JobKind)
        raise ValueError(f"kind must be one of {allowed}, got {text!r}") from None


def _bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("", "true", "false"):
        return None if lowered == "" else lowered == "true"
    raise ValueError(f"must be true, false or empty, got {text!r}")


def read_trace(path: Path | str) -> list[TraceJob]:
    """Every job of a canonical trace CSV, sorted by submit time (stable)."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return parse_trace(f, name=str(path))
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from exc


def parse_trace(lines: Iterable[str], *, name: str = "<trace>") -> list[TraceJob]:
    """Parse canonical trace CSV text (an open file or a list of lines)."""
    reader = csv.DictReader(lines)
    header = reader.fieldnames
    if header is None:
        raise TraceError(f"{name}: line 1: empty file, expected a header", line=1)
    missing = [c for c in COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise TraceError(
            f"{name}: line 1: missing column(s) {', '.join(missing)}", line=1, column=missing[0]
        )
    extra = [c for c in header if c not in COLUMNS]
    if extra:
        raise TraceError(f"{name}: line 1: unknown column(s) {', '.join(map(str, extra))}", line=1)
    jobs: list[TraceJob] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if None in row or any(row[c] is None for c in header):
            raise TraceError(f"{name}: line {line}: expected {len(header)} fields", line=line)
        job = _row_to_job(row, name=name, line=line)
        if job.job_id in seen:
            raise TraceError(
                f"{name}: line {line}: column 'job_id': duplicate {job.job_id!r}",
                line=line,
                column="job_id",
            )
        seen.add(job.job_id)
        jobs.append(job)
    jobs.sort(key=lambda j: j.submit_s)
    return jobs


def _row_to_job(row: dict[str, str], *, name: str, line: int) -> TraceJob:
    def cell(column: str, parse: Callable[[str], _T]) -> _T:
        try:
            return parse(row.get(column, ""))
        except ValueError as exc:
            raise TraceError(
                f"{name}: line {line}: column {column!r}: {exc}", line=line, column=column
            ) from None

    try:
        return TraceJob(
            job_id=cell("job_id", str),
            submit_s=cell("submit_s", _float),
            duration_s=cell("duration_s", _int),
            gpus=cell("gpus", _int),
            gpu_fraction=cell("gpu_fraction", _opt_float),
            nodes=cell("nodes", _int),
            gpu_models=cell("gpu_models", _models),
            tier=cell("tier", _tier),
            tenant=cell("tenant", str),
            deadline_s=cell("deadline_s", _opt_float),
            origin=cell("origin", _opt_text),
            preemptible=cell("preemptible", _bool),
            kind=cell("kind", _kind),
            cpu=cell("cpu", _amount),
            memory_gb=cell("memory_gb", _amount),
        )
    except _InvalidJob as exc:
        raise TraceError(
            f"{name}: line {line}: column {exc.column!r}: {exc.reason}",
            line=line,
            column=exc.column,
        ) from None


# Writing.


def _fmt_float(value: float) -> str:
    """Whole numbers without a trailing `.0` (smaller files); others exactly (`repr`)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _fmt_amount(value: float) -> str:
    """0 (not stated) as an empty cell, so unstated resources cost two commas a row."""
    return "" if value == 0 else _fmt_float(value)


def job_to_row(job: TraceJob) -> dict[str, str]:
    """The canonical CSV cells of one job."""
    return {
        "job_id": job.job_id,
        "submit_s": _fmt_float(job.submit_s),
        "duration_s": str(job.duration_s),
        "gpus": str(job.gpus),
        "gpu_fraction": "" if job.gpu_fraction is None else _fmt_float(job.gpu_fraction),
        "nodes": str(job.nodes),
        "gpu_models": "|".join(job.gpu_models),
        "tier": job.tier.value,
        "tenant": job.tenant,
        "deadline_s": "" if job.deadline_s is None else _fmt_float(job.deadline_s),
        "origin": job.origin or "",
        "preemptible": "" if job.preemptible is None else str(job.preemptible).lower(),
        "kind": job.kind.value,
        "cpu": _fmt_amount(job.cpu),
        "memory_gb": _fmt_amount(job.memory_gb),
    }


def write_trace(path: Path | str, jobs: Iterable[TraceJob]) -> int:
    """Write `jobs` sorted by submit time (stable) as a canonical trace; returns the count."""
    ordered = sorted(jobs, key=lambda j: j.submit_s)
    ids = [j.job_id for j in ordered]
    if len(ids) != len(set(ids)):
        raise TraceError("job ids must be unique within a trace", column="job_id")
    with Path(path).open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(job_to_row(j) for j in ordered)
    return len(ordered)


def records_from_trace(jobs: Iterable[TraceJob], *, epoch: datetime) -> list[DemandRecord]:
    """Canonical trace rows as records; `epoch` is the datetime of `submit_s` = 0.

    Trace run times are what a job took once placed and the sources record no queueing, so
    each job is taken to start when submitted: the table then shows the demand the trace's
    users expressed, not what some fleet managed to serve. The model is the job's first
    choice, `ANY_MODEL` when it accepts any. CPU-only jobs ask for no GPU and are left out:
    the table counts GPU demand.
    """
    if epoch.tzinfo is None:
        raise ValueError("epoch must be timezone-aware")
    records = []
    for job in jobs:
        if job.cpu_only:
            continue
        at = epoch + timedelta(seconds=job.submit_s)
        records.append(
            DemandRecord(
                submitted_at=at,
                started_at=at,
                ended_at=at + timedelta(seconds=job.duration_s),
                estimated_duration_s=float(job.duration_s),
                gpus=job.gpu_total,
                gpu_model=job.gpu_models[0] if job.gpu_models else ANY_MODEL,
                tier=job.tier,
            )
        )
    return records
