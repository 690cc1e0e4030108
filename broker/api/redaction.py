"""The last net under every problem document: its strings pass through the shared redactor.

A problem's `detail` is often an exception's text (a connector error, a database error,
a validation message quoting the input), built far from here. Routes that show provider
text redact it themselves (`fleet.py`, `broker.checks`); this middleware makes sure no
error response carries a registered secret or a secret's shape even where one forgot.

It sits outside `problem_middleware`, so it sees the document that middleware made from an
exception. The body is parsed and each string redacted on its own, so a cut can never
break the JSON. Only problem documents are touched: success bodies can be large (job
lists) and are built from the broker's own records, redacted where they were stored.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from broker.api.problems import PROBLEM_JSON, Handler
from redaction import redact


@web.middleware
async def redaction_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if (
        isinstance(response, web.Response)
        and response.content_type == PROBLEM_JSON
        and isinstance(response.body, bytes)
    ):
        try:
            document = json.loads(response.body)
        except ValueError:
            response.text = redact(response.body.decode("utf-8", errors="replace"))
        else:
            response.text = json.dumps(_redacted(document), ensure_ascii=False)
    return response


def _redacted(value: Any) -> Any:
    """`value` with every string inside it redacted (JSON values only)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value
