"""Settings of the live carbon sources, validated field by field; secrets only by reference.

An API key or password is named, never written: `api_key_env` names an environment variable
and `api_key_file` a file holding the key (WattTime: `username` plus `password_env` or
`password_file`). A key pasted inline (`api_key:`, `token:`, `password:` ...) is refused with
an error naming the field, not its value. Pydantic's own messages echo the input, so every
model sets ``hide_input_in_errors``: a `ValidationError` from here never repeats a value.

The resolved secret is a `SecretStr`, whose repr and str are masked; the sources keep it
private and put it only into request headers. It is also registered with the shared
redactor (`redaction`) as it is read, so a provider that echoes it is cut everywhere.

Example (YAML; where this sits in the broker's settings tree is up to the integration)::

    electricitymaps:
      api_key_env: ELECTRICITYMAPS_TOKEN
      emission_factor_type: lifecycle
      requests_per_minute: 30
    watttime:
      username: broker
      password_file: secrets/watttime-password
      regions: {US-CAL-CISO: CAISO_NORTH}
    uk_carbon_intensity: {}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from carbon.live.errors import SourceAuthError
from redaction import register

__all__ = [
    "ElectricityMapsSettings",
    "LiveSourceSettings",
    "UKCarbonIntensitySettings",
    "WattTimeSettings",
]

# Field names someone might use to paste a secret instead of naming where it lives.
_INLINE_SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "auth_token",
        "api_token",
        "password",
        "secret",
        "credentials",
    }
)
_URL = r"^https?://[^\s]+$"


class LiveSourceSettings(BaseModel):
    """What every live source shares: where it is, how patient it is, how often it may ask."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Root of the API ("https://host/prefix", no trailing slash); the fake server in tests.
    base_url: Annotated[str, Field(pattern=_URL)]
    # Whole-request and connect timeouts of one attempt.
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Attempts per request (1 = no retry) on 429, 5xx, connection errors and timeouts.
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    # Exponential backoff with full jitter: attempt n waits uniform(0, min(max, base * 2^(n-1))).
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.5
    backoff_max_s: Annotated[float, Field(ge=0)] = 30.0
    # A Retry-After longer than this is not waited for: the request fails at once instead.
    retry_after_max_s: Annotated[float, Field(ge=0)] = 60.0
    # Client-side rate limit (token bucket); the tighter of the two applies, None = no limit.
    requests_per_second: Annotated[float, Field(gt=0)] | None = None
    requests_per_minute: Annotated[float, Field(gt=0)] | None = None
    # Requests allowed back to back before the rate limit spaces them.
    burst: Annotated[int, Field(ge=1, le=1000)] = 1
    # How long an answer is reused before asking again, per (zone, endpoint).
    cache_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    # How long past its TTL an answer may still be served, marked stale, during an outage.
    stale_keep_s: Annotated[float, Field(ge=0)] = 86_400.0

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted(_INLINE_SECRET_FIELDS & {str(k).lower() for k in data})
            if inline:
                raise ValueError(
                    f"inline secrets ({', '.join(inline)}) are not accepted: name an "
                    "environment variable (*_env) or a file (*_file) that holds the secret"
                )
        return data


def _read_secret(
    *, env_name: str | None, file: Path | None, env: Mapping[str, str] | None, what: str
) -> SecretStr:
    """The secret from the named variable or file; errors name the place, never the value."""
    if env_name is not None:
        value = (os.environ if env is None else env).get(env_name, "").strip()
        if not value:
            raise SourceAuthError(
                f"{what}: environment variable {env_name} is not set", provider=what
            )
        register(value)  # cut out of every message and log record from now on
        return SecretStr(value)
    if file is None:  # the validators make this unreachable
        raise SourceAuthError(f"{what}: no secret configured", provider=what)
    try:
        value = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SourceAuthError(
            f"{what}: cannot read secret file {file} ({exc.strerror})", provider=what
        ) from None
    if not value:
        raise SourceAuthError(f"{what}: secret file {file} is empty", provider=what)
    register(value)
    return SecretStr(value)


def _one_of(first: object, second: object, names: str) -> None:
    if (first is None) == (second is None):
        raise ValueError(f"set exactly one of {names}")


class ElectricityMapsSettings(LiveSourceSettings):
    """Electricity Maps API v3 (https://static.electricitymaps.com/api/docs/index.html)."""

    base_url: Annotated[str, Field(pattern=_URL)] = "https://api.electricitymap.org/v3"
    # Where the auth-token lives: an environment variable's name, or a file's path.
    api_key_env: Annotated[str, Field(min_length=1)] | None = None
    api_key_file: Path | None = None
    # Deprecated: the source asks for `carbon.basis` (lifecycle -> "lifecycle", operational
    # -> "direct"). When given, it must agree with carbon.basis.
    emission_factor_type: Literal["lifecycle", "direct"] | None = None

    @model_validator(mode="after")
    def _check(self) -> ElectricityMapsSettings:
        _one_of(self.api_key_env, self.api_key_file, "api_key_env, api_key_file")
        return self

    def api_key(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """Read the key from its variable or file (env defaults to the process environment)."""
        return _read_secret(
            env_name=self.api_key_env, file=self.api_key_file, env=env, what="electricitymaps"
        )


class WattTimeSettings(LiveSourceSettings):
    """WattTime API v3 (https://docs.watttime.org/): basic-auth login, then a bearer token."""

    base_url: Annotated[str, Field(pattern=_URL)] = "https://api.watttime.org"
    # The account name; the password only by reference.
    username: Annotated[str, Field(min_length=1)]
    password_env: Annotated[str, Field(min_length=1)] | None = None
    password_file: Path | None = None
    # Broker zone (Electricity Maps id) -> WattTime region, e.g. US-CAL-CISO: CAISO_NORTH.
    # A zone missing here is unknown to this source (no request is made for it).
    regions: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    # Hours of forecast asked for (the API serves up to 72).
    forecast_horizon_hours: Annotated[int, Field(ge=1, le=72)] = 24
    # Tokens last 30 minutes; log in again a little before that.
    token_ttl_s: Annotated[float, Field(gt=0)] = 1_500.0
    # The documented limit is 3,000 requests per 5 minutes: 10 per second.
    requests_per_second: Annotated[float, Field(gt=0)] | None = 10.0

    @model_validator(mode="after")
    def _check(self) -> WattTimeSettings:
        _one_of(self.password_env, self.password_file, "password_env, password_file")
        return self

    def password(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """Read the password from its variable or file."""
        return _read_secret(
            env_name=self.password_env, file=self.password_file, env=env, what="watttime"
        )


class UKCarbonIntensitySettings(LiveSourceSettings):
    """GB Carbon Intensity API (https://carbon-intensity.github.io/api-definitions/); no key."""

    base_url: Annotated[str, Field(pattern=_URL)] = "https://api.carbonintensity.org.uk"
    # Half-hourly data: a shorter TTL than the hourly providers.
    cache_ttl_s: Annotated[float, Field(ge=0)] = 900.0
