"""Every log record redacted once, where it is made.

The hook is a log record factory, not a `logging.Filter` on some handlers: a filter sees
only the records of the handlers it was put on, and handlers come and go (the one
`logging.basicConfig` adds, an operator's dictConfig, pytest's capture), while every record
of every logger is made by the factory. The record's message is formatted there (the same
`msg % args` a handler would do) and redacted, its traceback and stack are formatted and
redacted into `exc_text` and `stack_info`, which `logging.Formatter` prints instead of
formatting the exception again. Records below a logger's level are never made, so nothing
is formatted that would not have been anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from redaction.redactor import REDACTOR, Redactor

_MARKER = "_redacting"
_FORMATTER = logging.Formatter()


def install(redactor: Redactor = REDACTOR) -> None:
    """Redact every log record of this process from now on (once; later calls do nothing)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, _MARKER, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub_record(record, redactor)
        return record

    setattr(factory, _MARKER, True)
    logging.setLogRecordFactory(factory)


def scrub_record(record: logging.LogRecord, redactor: Redactor = REDACTOR) -> None:
    """Format and redact the record's message, traceback and stack in place."""
    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: keep both, redacted
        message = f"{record.msg!s} {record.args!r}"
    record.msg, record.args = redactor.redact(message), ()
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redactor.redact(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redactor.redact(record.stack_info)
