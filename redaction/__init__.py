"""One redactor for every secret the broker loads or mints, and for shapes of secrets.

Secrets reach text by accident: a provider that repeats the bearer token in its error
message, an SDK exception that quotes a request header, a traceback. So every text that
leaves the process (error messages, health reasons, log records, API responses, `broker
check`) passes through one `Redactor`:

* exact values first: each secret is registered where it is loaded or minted (keys,
  passwords, session tokens, OAuth bearers, kubeconfig tokens and certificates), with the
  forms it commonly travels in (base64, URL-quoted, JSON-escaped, each line of a PEM);
* then shapes (`shapes.py`): `Bearer …`, JWTs, `Authorization: …`, PEM blocks, AWS key
  fields and query parameters such as `password=`, URL passwords, as a second net for a
  secret nobody registered.

This is a top-level package of its own, importing nothing of the broker, so that every
layer may use it: the import-linter contracts forbid `carbon` to import `broker` or
`connectors`, and connectors may import only `broker.domain` of the broker.

The registry (`REDACTOR`) is process-wide, unlike the rest of the broker's state: log
records are process-wide too (one logging tree, handlers installed by whoever configures
logging), and secrets are minted deep inside connectors on SDK threads, far from anything
that could be handed a per-app object. `logs.install()` hooks it into every log record.
"""

from __future__ import annotations

from redaction.redactor import MARK, REDACTOR, Redactor, cap, redact, register, register_url

__all__ = ["MARK", "REDACTOR", "Redactor", "cap", "redact", "register", "register_url"]
