"""Loading a site's Google credentials, registering every secret with the shared redactor.

A service-account key file holds the private key and its id; both are registered when the
file is read, with each line of the PEM (a message quoting one line must not carry it).
The key then mints bearer credentials: OAuth access tokens from the token endpoint, and the
self-signed JWTs the compute clients send. Both are set in `Credentials.refresh`, so the
credentials are an instance of a subclass whose `refresh` registers the new token. The
compute clients copy the credentials (`with_always_use_jwt_access`), and google-auth makes
copies with `self.__class__`, so the copies register too.

Application default credentials come in many classes; their `refresh` is wrapped on the
instance. An SDK copy of those loses the wrapper, and the redactor's shapes (`Bearer …`,
JWTs) are the net for what that copy mints.

Runs on the SDK pool: it reads a file, and google-auth takes a while to import.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redaction import register

if TYPE_CHECKING:
    from google.auth.credentials import Credentials


def load_credentials(path: Path | None, *, scopes: Sequence[str]) -> tuple[Credentials, str]:
    """The credentials of a key file (or application default ones) and who they are.

    Raises OSError when the file cannot be read, ValueError when it is not a key file, and
    google-auth's DefaultCredentialsError when no default credentials exist."""
    if path is None:
        return _default(scopes), "application default credentials"
    info = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict):
        raise ValueError("not a service-account key file")
    for field in ("private_key", "private_key_id"):
        register(info.get(field) if isinstance(info.get(field), str) else None)
    creds = _registering_class().from_service_account_info(info, scopes=list(scopes))
    return creds, f"service account {creds.service_account_email}"


def _default(scopes: Sequence[str]) -> Credentials:
    import google.auth

    creds, _ = google.auth.default(scopes=list(scopes))
    refresh = creds.refresh

    def registering_refresh(request: Any) -> None:
        refresh(request)  # type: ignore[no-untyped-call]  # unannotated upstream
        register(creds.token, ephemeral=True)

    creds.refresh = registering_refresh  # type: ignore[method-assign]
    return creds


@functools.cache
def _registering_class() -> Any:
    """`service_account.Credentials` whose `refresh` registers each minted token; made on
    first use, so google-auth is imported on the pool, not when this module is."""
    from google.oauth2 import service_account

    class RegisteringCredentials(service_account.Credentials):
        def refresh(self, request: Any) -> None:
            super().refresh(request)  # type: ignore[no-untyped-call]
            register(self.token, ephemeral=True)

    return RegisteringCredentials
