"""Bounds on what a client may send, checked where it enters (the API's schemas and query
parsing) so that the arithmetic, comparisons and storage behind it never meet a value they
cannot hold.

Each bound answers a failure that a value the parser accepts would cause later: a time a day
from `datetime.min`/`max` overflows once an offset or a span is applied; an integer past
int64 overflows a BIGINT column; a NUL byte is refused by PostgreSQL's text and JSON types
(SQLite stores it, so the two databases would disagree); `str.isdigit` and `\\d` also admit
digits such as "²" that `int()` refuses.
"""

from __future__ import annotations

from datetime import datetime

# Far enough back for any report and ahead for any deadline; far enough from years 1 and
# 9999 that adding a UTC offset or a span of a year or so cannot overflow.
EARLIEST_YEAR = 1970
LATEST_YEAR = 2999
TIME_RANGE = f"a time in the years {EARLIEST_YEAR} to {LATEST_YEAR}"

INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))

# A JSON Schema / regex pattern of text both databases store as given: no NUL byte.
NO_NUL = r"^[^\x00]*$"


def time_in_range(value: datetime) -> bool:
    """Whether `value`, read by its own calendar fields, lies within the years allowed; no
    offset arithmetic here, which is what could overflow."""
    return EARLIEST_YEAR <= value.year <= LATEST_YEAR


def ascii_int(raw: str, *, lo: int = 0, hi: int = INT64_MAX) -> int | None:
    """`raw` as an int when it is ASCII digits only and within [lo, hi]; None otherwise."""
    if not (raw.isascii() and raw.isdigit()) or len(raw.lstrip("0")) > _INT64_DIGITS:
        return None
    value = int(raw)
    return value if lo <= value <= hi else None


def storable(text: str) -> bool:
    """Whether every database stores `text` as given: no NUL, no lone surrogate."""
    try:
        text.encode("utf-8")  # a lone surrogate (a header's undecodable byte) cannot be
    except UnicodeEncodeError:
        return False
    return "\x00" not in text
