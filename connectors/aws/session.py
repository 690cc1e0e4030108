"""A botocore session per site, for the credential source the settings name.

Credentials come by reference only: a named profile, a role to assume, or the default chain
(environment, shared files, SSO, instance or task role). With `role_arn`, STS `AssumeRole`
runs from the default chain on first use and again before the temporary credentials expire
(botocore's deferred refreshable credentials), so a long-running broker never holds an
expired session. https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html

The clients are botocore's (boto3's engine; boto3's own layer adds resources, which the
connector does not use), created with retries off: the retry policy is the broker's.
Everything here runs in the SDK thread pool and imports the SDK on first use.

Every key the session signs with is registered with the shared redactor (`redaction`) just
before each request is signed: the access key id, the secret key and the session token,
whichever source they came from and however often botocore refreshed them. A provider
message that repeats one is then cut out wherever it goes (`faults.scrub`, logs, the API).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from connectors.aws.settings import AwsSettings
from redaction import register

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0

# botocore's DEBUG records dump wire traffic: signed request headers with the session token
# (auth, endpoint) and response bodies with AssumeRole's temporary keys (parsers). Drop
# those records whatever level an operator sets, so no credential can reach a log.
_WIRE_LOGGERS = (
    "botocore.auth",
    "botocore.endpoint",
    "botocore.parsers",
    "botocore.httpsession",
    "botocore.credentials",
    "botocore.hooks",
)


class _NoWireDumps(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _name in _WIRE_LOGGERS:
    logging.getLogger(_name).addFilter(_NoWireDumps())


def client_config(*, region: str, pool: int) -> Any:
    """botocore's client settings: one attempt (the retry policy is ours), bounded waits."""
    from botocore.config import Config

    return Config(
        region_name=region,
        retries={"total_max_attempts": 1, "mode": "standard"},  # one try: the retries are ours
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_pool_connections=pool,
        user_agent_appid="gpu-broker",
    )


def open_session(settings: AwsSettings, *, region: str) -> Any:
    """A botocore session for the configured credential source (runs in the thread pool)."""
    import botocore.session

    session = botocore.session.Session(profile=settings.profile)
    session.register_component("data_loader", _models())
    register(settings.external_id)
    if settings.role_arn is not None:
        _assume_role(session, settings=settings, config=client_config(region=region, pool=1))
    # Clients copy the session's event handlers when created, so this reaches every client.
    session.register("before-sign", functools.partial(_register_keys, session))
    return session


def _register_keys(session: Any, **_: Any) -> None:
    """Register the keys about to sign a request (botocore's `before-sign` event).

    `get_frozen_credentials` is what the signer calls next: it refreshes expiring
    credentials, so the values registered are the ones the request is signed with."""
    credentials = session.get_credentials()
    if credentials is None:
        return
    frozen = credentials.get_frozen_credentials()
    # Temporary keys (a session token) change; long-lived keys are kept for good.
    temporary = bool(frozen.token)
    register(frozen.access_key, ephemeral=temporary)
    register(frozen.secret_key, ephemeral=temporary)
    register(frozen.token, ephemeral=True)


@functools.cache
def _models() -> Any:
    """One botocore model loader for the process: parsing the EC2 model takes most of a second
    and megabytes of memory, and it is the same for every site's session."""
    import botocore.loaders

    return botocore.loaders.create_loader()


class _FixedProvider:
    """A credential provider that always answers with one (refreshable) credentials object."""

    METHOD = "gpu-broker-assume-role"
    CANONICAL_NAME = "custom-gpu-broker-assume-role"

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load(self) -> Any:
        return self._credentials


def _assume_role(session: Any, *, settings: AwsSettings, config: Any) -> None:
    """Make `session` use `AssumeRole` credentials, fetched from the default chain on first use
    and refreshed before they expire."""
    import botocore.session
    from botocore.credentials import CredentialResolver, DeferredRefreshableCredentials

    base = botocore.session.Session()
    base.register_component("data_loader", _models())
    base.register("before-sign", functools.partial(_register_keys, base))
    sts = base.create_client("sts", endpoint_url=settings.endpoint_url, config=config)
    request = {"RoleArn": settings.role_arn, "RoleSessionName": settings.session_name}
    if settings.external_id is not None:
        request["ExternalId"] = settings.external_id

    def fetch() -> dict[str, str]:
        creds = sts.assume_role(**request)["Credentials"]
        for value in (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]):
            register(value, ephemeral=True)
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    credentials = DeferredRefreshableCredentials(refresh_using=fetch, method="assume-role")
    session.register_component(
        "credential_provider", CredentialResolver(providers=[_FixedProvider(credentials)])
    )
