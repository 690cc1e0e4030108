"""Reading the public traces' own CSV files (gzipped or not): rows with line numbers after a
header check, and numbers that name file, line and column when they are bad. Shared by the
converters (`convert.py`, `openb.py`)."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from broker.simulation.traces import TraceError


def open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def source_rows(path: Path, *, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row, after checking the header."""
    try:
        f = open_text(path)
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror}") from exc
    with f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise TraceError(f"{path}: line 1: missing column(s) {', '.join(missing)}", line=1)
        for row in reader:
            yield reader.line_num, row


def source_number(row: dict[str, str], column: str, *, path: Path, line: int) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        raise TraceError(
            f"{path}: line {line}: column {column!r}: not a number: {row[column]!r}",
            line=line,
            column=column,
        ) from None
    if not math.isfinite(value):
        raise TraceError(f"{path}: line {line}: column {column!r}: not finite", line=line)
    return value
