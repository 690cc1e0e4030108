"""The registry of secret values, and `redact`: registered values first, shapes second.

A value is registered with the forms it commonly travels in: its base64 (kubeconfig
`*-data` fields, Basic credentials), URL-quoted (query strings), JSON-escaped (a PEM inside
a JSON key file) and, for a multi-line value such as a PEM key, each long line on its own,
so a message that quotes one line of a key is caught too. Values shorter than
`min_length` are ignored: a two-letter password would otherwise be cut out of every word.

Minted credentials (OAuth bearers, session tokens) are registered as `ephemeral`: a broker
that runs for months mints thousands, so only the newest `keep_ephemeral` are kept and the
oldest, long expired, leave to the shape patterns. Loaded secrets are kept for good.

Matching is a plain substring search per value (C speed, no regex over hundreds of
alternatives), longest first, so a value is cut before any shorter value inside it.
Registration may come from any thread; `redact` reads an immutable snapshot without a lock.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from urllib.parse import quote, urlsplit

from redaction.shapes import MARK, redact_shapes

__all__ = ["MARK", "REDACTOR", "Redactor", "cap", "redact", "register", "register_url"]

MIN_LENGTH = 8
LINE_MIN_LENGTH = 16  # a line of a multi-line secret (64 for PEM) counts on its own
KEEP_EPHEMERAL = 512
REASON_CHARS = 300


class Redactor:
    """Secret values by exact match, then secret shapes, cut out of any text."""

    def __init__(
        self, *, min_length: int = MIN_LENGTH, keep_ephemeral: int = KEEP_EPHEMERAL
    ) -> None:
        self._min = min_length
        self._keep = keep_ephemeral
        self._lock = threading.Lock()
        self._static: dict[str, None] = {}
        self._ephemeral: OrderedDict[str, None] = OrderedDict()
        self._snapshot: tuple[str, ...] = ()

    def register(self, value: str | bytes | None, *, ephemeral: bool = False) -> None:
        """Cut `value` (and its common encodings) out of every text from now on."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if not value or len(value.strip()) < self._min:
            return
        forms = [f for f in _forms(value.strip()) if len(f) >= self._min]
        changed = False
        with self._lock:
            new = [f for f in forms if f not in self._static]
            if ephemeral:
                for form in new:
                    if form in self._ephemeral:  # seen again (a signer registers per call)
                        self._ephemeral.move_to_end(form)
                        continue
                    self._ephemeral[form] = None
                    changed = True
                while len(self._ephemeral) > self._keep:
                    self._ephemeral.popitem(last=False)
                    changed = True
            else:
                for form in new:
                    self._static[form] = None
                    self._ephemeral.pop(form, None)
                    changed = True
            if changed:
                values = {*self._static, *self._ephemeral}
                self._snapshot = tuple(sorted(values, key=len, reverse=True))

    def register_url(self, url: str | None) -> None:
        """Register the password of a URL's userinfo (a database URL), if it has one."""
        if not url:
            return
        try:
            password = urlsplit(url).password
        except ValueError:
            return
        self.register(password)

    def redact(self, text: str) -> str:
        """`text` with every registered value and every secret shape replaced by `MARK`."""
        if not text:
            return text
        for value in self._snapshot:
            if value in text:
                text = text.replace(value, MARK)
        return redact_shapes(text)

    def __len__(self) -> int:
        return len(self._snapshot)

    def __repr__(self) -> str:  # never the values
        return f"Redactor({len(self._snapshot)} values)"


def _forms(value: str) -> list[str]:
    """The value and the encodings it is commonly found in."""
    forms = [value]
    raw = value.encode()
    forms.append(base64.b64encode(raw).decode())
    forms.append(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    forms.append(quote(value, safe=""))
    forms.append(json.dumps(value)[1:-1])  # escaped newlines, quotes and slashes
    if "\n" in value:
        forms += [
            line.strip()
            for line in value.splitlines()
            if len(line.strip()) >= LINE_MIN_LENGTH and "-----" not in line
        ]
    return list(dict.fromkeys(forms))


def cap(text: str, limit: int = REASON_CHARS) -> str:
    """`text` on one line and at most `limit` characters, ending in "…" when cut.

    Redact before capping: a cut could split a registered value so it no longer matches."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


# The process-wide registry; see the package docstring for why it is one.
REDACTOR = Redactor()


def register(value: str | bytes | None, *, ephemeral: bool = False) -> None:
    """Register a secret value with the process-wide redactor."""
    REDACTOR.register(value, ephemeral=ephemeral)


def register_url(url: str | None) -> None:
    """Register the password of a URL with the process-wide redactor."""
    REDACTOR.register_url(url)


def redact(text: str) -> str:
    """`text` through the process-wide redactor."""
    return REDACTOR.redact(text)
