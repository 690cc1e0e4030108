"""The one settings tree: loaded once from a YAML file plus a few environment variables.

Every field is documented here or in the module whose code reads it (sites and pools in
`connectors.settings`, bursting in `broker.burst.settings`...); `config/example.yaml` shows
them in use. Secrets are never values in this tree: API tokens appear only as salted hashes,
cloud credentials only by reference (a profile name, a file path), so the loaded settings
are safe to log.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.burst.settings import BurstSettings
from broker.db.connection import DEFAULT_DATABASE_URL
from broker.domain.enums import Role, SiteKind
from broker.domain.errors import ConfigError
from broker.domain.latency import LatencyMatrix
from broker.duties.settings import ScheduleSettings
from broker.scheduling.settings import SchedulerSettings
from carbon.settings import CarbonSettings
from connectors.settings import SimSettings, SiteSettings
from connectors.threads import DEFAULT_THREADS

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_CONFIG = REPO_CONFIG_DIR / "demo.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024


class TokenSettings(_Strict):
    """One API token, stored as `sha256$<salt>$<hex digest>` (see `broker token hash`)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    tenant: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    role: Role = Role.USER
    hash: Annotated[str, Field(pattern=r"^sha256\$[0-9a-f]{16,64}\$[0-9a-f]{64}$")]


class AuthSettings(_Strict):
    tokens: tuple[TokenSettings, ...] = ()

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, v: tuple[TokenSettings, ...]) -> tuple[TokenSettings, ...]:
        names = [t.name for t in v]
        if len(names) != len(set(names)):
            raise ValueError("token names must be unique")
        return v


class LatencySettings(_Strict):
    """A CSV of measured round-trip times `src,dst,rtt_ms`; relative paths are from the config."""

    file: str | None = None


class Settings(_Strict):
    database_url: str = DEFAULT_DATABASE_URL
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    sim: SimSettings = SimSettings()
    latency: LatencySettings = LatencySettings()
    carbon: CarbonSettings = CarbonSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    burst: BurstSettings = BurstSettings()
    sites: tuple[SiteSettings, ...] = ()  # fields documented in `connectors.settings`
    # Threads for blocking provider-SDK calls (Kubernetes, boto3, google-cloud-compute),
    # one pool shared by every connector: it bounds how many such calls run at once, so a
    # slow provider queues its own calls instead of starving the event loop or the host.
    sdk_threads: Annotated[int, Field(ge=1, le=256)] = DEFAULT_THREADS
    config_dir: Path = Path(".")

    @model_validator(mode="after")
    def _unique_sites(self) -> Settings:
        names = [s.name for s in self.sites]
        if len(names) != len(set(names)):
            raise ValueError("site names must be unique")
        kinds = {s.name: s.kind for s in self.sites}
        for t in self.burst.targets:
            if kinds.get(t.provider) not in (SiteKind.AWS, SiteKind.GCP):
                raise ValueError(f"burst target provider {t.provider!r} is not an aws or gcp site")
            if kinds.get(t.joins) is not SiteKind.KUBERNETES:
                raise ValueError(f"burst target joins {t.joins!r}, which is not a kubernetes site")
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.config_dir / p


ENV_OVERRIDES: Mapping[str, tuple[str, ...]] = {
    "BROKER_DATABASE_URL": ("database_url",),
    "BROKER_HTTP_HOST": ("http", "host"),
    "BROKER_HTTP_PORT": ("http", "port"),
}


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read `path` (default: $BROKER_CONFIG, else the demo config) and apply the environment."""
    env = os.environ if env is None else env
    path = path or Path(env.get("BROKER_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    for var, keys in ENV_OVERRIDES.items():
        if env.get(var):
            _set(raw, keys, env[var])
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set(raw, tuple(dotted.split(".")), value)
    raw["config_dir"] = str(path.resolve().parent)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} is invalid:\n{describe_invalid(exc)}") from None


def describe_invalid(exc: ValidationError) -> str:
    """Where and why settings are invalid, one line each, without the values given
    (a value in the wrong place may be a secret)."""
    return "\n".join(
        f"  {'.'.join(map(str, e['loc']))}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    )


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def load_latency(settings: Settings) -> LatencyMatrix:
    """The configured RTT table (`src,dst,rtt_ms` CSV), or an empty one."""
    if settings.latency.file is None:
        return LatencyMatrix({})
    path = settings.resolve(settings.latency.file)
    with path.open(newline="", encoding="utf-8") as fh:
        return LatencyMatrix.from_rows(
            (row["src"], row["dst"], float(row["rtt_ms"])) for row in csv.DictReader(fh)
        )
