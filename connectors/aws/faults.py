"""botocore errors into the connector errors, by error code first and HTTP status second.

The code decides because EC2 reports some capacity shortages as server errors (HTTP 500
`InsufficientInstanceCapacity`), which a status-only rule would retry in the same zone.
Capacity codes only mean "try the next zone" for `RunInstances`; elsewhere `Unsupported`
is a plain rejected request. `UnauthorizedOperation` (valid credentials, call not allowed
by IAM) is an `AuthFailed` subclass so callers that can live without a call (spot prices)
tell it apart from a rejected credential.

Messages carry the operation, the error code and the provider's message, passed through
the shared redactor (`redaction`): the session's keys and session token are registered
with it as they are used (`session.py`), and shapes such as access key ids catch the rest.
AWS does not echo secrets, but a proxy or an emulator may, and a message is logged, stored
and shown, so it is redacted before it is cut to length (a cut could split a secret).
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
"""

from __future__ import annotations

from connectors.errors import (
    AuthFailed,
    CapacityUnavailable,
    Conflict,
    ConnectorError,
    NotFound,
    TransientError,
)
from redaction import cap, redact

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "Unsupported",  # the type is not supported in this zone
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "InsufficientFreeAddressesInSubnet",
    }
)
DENIED_CODES = frozenset({"UnauthorizedOperation"})
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "MissingAuthenticationToken",
        "OptInRequired",
        "PendingVerification",
        "Blocked",
    }
)
THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "EC2ThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
    }
)
CONFLICT_CODES = frozenset(
    {"IncorrectInstanceState", "IncorrectState", "IdempotentParameterMismatch"}
)
DRY_RUN_OK = "DryRunOperation"

_MAX_MESSAGE = 300


class Denied(AuthFailed):
    """The credentials are valid but IAM does not allow this call."""


class ZoneFull(CapacityUnavailable):
    """One `RunInstances` attempt found no room; `code` is EC2's reason."""

    def __init__(self, message: str, *, site: str, code: str) -> None:
        super().__init__(message, site=site)
        self.code = code


def scrub(text: str) -> str:
    """The text redacted of every registered secret and secret shape, then capped."""
    return cap(redact(text), _MAX_MESSAGE)


def client_error(
    *, code: str, status: int, message: str, site: str, what: str, capacity: bool
) -> ConnectorError:
    """The connector error for an AWS error response."""
    text = f"{what}: {code}: {scrub(message)}" if message else f"{what}: {code}"
    if capacity and code in CAPACITY_CODES:
        return ZoneFull(text, site=site, code=code)
    if code in DENIED_CODES:
        return Denied(text, site=site)
    if code in AUTH_CODES:
        return AuthFailed(text, site=site)
    if code in THROTTLE_CODES or code in TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(text, site=site)
    if code.endswith(("NotFound", "NotFoundException", ".Malformed")):
        return NotFound(text, site=site)
    if code in CONFLICT_CODES:
        return Conflict(text, site=site)
    return ConnectorError(text, site=site)


def translate(
    exc: Exception, *, site: str, what: str, capacity: bool = False
) -> ConnectorError | None:
    """The connector error for a botocore exception, or None when `exc` is not botocore's
    (a bug of ours, which must surface as it is)."""
    from botocore import exceptions as sdk

    if isinstance(exc, sdk.ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        return client_error(
            code=str(error.get("Code", "")) or "Unknown",
            status=int(meta.get("HTTPStatusCode", 0) or 0),
            message=str(error.get("Message", "")),
            site=site,
            what=what,
            capacity=capacity,
        )
    kind = type(exc).__name__
    credentials = (
        sdk.NoCredentialsError,
        sdk.PartialCredentialsError,
        sdk.ProfileNotFound,
        sdk.CredentialRetrievalError,
        sdk.InvalidConfigError,
        sdk.SSOError,
        sdk.TokenRetrievalError,
        sdk.RefreshWithMFAUnsupportedError,
    )
    if isinstance(exc, credentials):
        return AuthFailed(
            f"{what}: credentials could not be resolved: {kind}: {scrub(str(exc))}", site=site
        )
    if isinstance(exc, sdk.ConnectionError | sdk.HTTPClientError):
        return TransientError(f"{what}: {kind}: {scrub(str(exc))}", site=site)
    if isinstance(exc, sdk.BotoCoreError):
        # ParamValidationError and the like: the text may quote request values (user data).
        return ConnectorError(f"{what}: {kind}", site=site)
    return None
