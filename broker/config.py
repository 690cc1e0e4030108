"""The one settings tree: loaded once from a YAML file plus a few environment variables.

Every field is documented here; `config/example.yaml` shows them in use. Secrets are never
values in this tree: API tokens appear only as salted hashes, cloud credentials only by
reference (a profile name, a file path), so the loaded settings are safe to log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from broker.burst.settings import BurstSettings
from broker.domain.enums import Role, SiteKind, Tier
from broker.domain.errors import BrokerError
from broker.scheduled.settings import ScheduleSettings
from carbon.settings import CarbonSettings

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_CONFIG = REPO_CONFIG_DIR / "demo.yaml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///broker.db"


class ConfigError(BrokerError):
    """The configuration file is missing, malformed or invalid."""


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


class WeightSettings(_Strict):
    cost: Annotated[float, Field(ge=0)] = 1.0
    latency: Annotated[float, Field(ge=0)] = 1.0
    carbon: Annotated[float, Field(ge=0)] = 1.0


def _default_weights() -> dict[Tier, WeightSettings]:
    return {
        Tier.P1: WeightSettings(cost=0.2, latency=0.6, carbon=0.2),
        # Batch and experiments lean on carbon: on the Philly sample replay this cut
        # emissions by a third against FIFO at a quarter less cost (see the issue notes).
        Tier.P2: WeightSettings(cost=0.2, latency=0.0, carbon=0.8),
        Tier.P3: WeightSettings(cost=0.2, latency=0.0, carbon=0.8),
    }


class SchedulerSettings(_Strict):
    interval_s: Annotated[float, Field(gt=0)] = 2.0  # periodic pass besides event wake-ups
    batch_size: Annotated[int, Field(gt=0)] = 200  # pending jobs considered per pass
    gpu_utilisation: Annotated[float, Field(gt=0, le=1)] = 0.8  # for energy estimates
    weights: dict[Tier, WeightSettings] = Field(default_factory=_default_weights)
    preemption: bool = True  # P1 (and quota owners) may preempt lower-tier preemptible work
    min_runtime_s: Annotated[float, Field(ge=0)] = 300.0  # no preemption before this runtime
    aging_per_hour: Annotated[float, Field(ge=0)] = 0.05  # fair-share credit per hour waited
    # a job whose slack to its deadline is below this goes ahead of fair-share order
    urgent_slack_s: Annotated[float, Field(ge=0)] = 6 * 3600.0
    deferral: bool = True  # hold jobs with a deadline for a cleaner window
    deferral_min_saving: Annotated[float, Field(ge=0, lt=1)] = 0.1  # fraction of gCO2e
    deferral_margin_s: Annotated[float, Field(ge=0)] = 1800.0  # slack kept before deadlines
    deferral_horizon_h: Annotated[int, Field(ge=1, le=168)] = 48  # furthest look-ahead
    # Guaranteed GPUs per tenant and tier; beyond it a tenant may borrow idle GPUs, which
    # the owner reclaims by preemption when it needs them.
    quotas: dict[str, dict[Tier, Annotated[float, Field(ge=0)]]] = Field(default_factory=dict)
    borrowing: bool = True

    @field_validator("weights")
    @classmethod
    def _every_tier(cls, v: dict[Tier, WeightSettings]) -> dict[Tier, WeightSettings]:
        """Tiers left out of the file keep their defaults."""
        return {**_default_weights(), **v}


class SimSettings(_Strict):
    """The demo fleet's simulator: jobs run `estimated_duration_s / speed` wall seconds."""

    speed: Annotated[float, Field(gt=0)] = 60.0
    start_delay_s: Annotated[float, Field(ge=0)] = 1.0  # image pull + container start


class PoolSettings(_Strict):
    gpu_model: Annotated[str, Field(min_length=1)]
    gpu_memory_gb: Annotated[float, Field(gt=0)]
    gpus_per_node: Annotated[int, Field(gt=0)]
    nodes: Annotated[int, Field(gt=0)]
    price_on_demand: Annotated[float, Field(ge=0)]
    price_spot: Annotated[float, Field(ge=0)] | None = None
    mig_profiles: tuple[str, ...] = ()
    cpu_per_node: Annotated[float, Field(gt=0)] = 96.0
    memory_gb_per_node: Annotated[float, Field(gt=0)] = 1024.0


class SiteSettings(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
    kind: SiteKind
    region: Annotated[str, Field(min_length=1)]
    location: str | None = None  # latency-matrix key; default "<kind>:<region>"
    grid_zone: Annotated[str, Field(min_length=1)]
    private: bool = False
    pue: Annotated[float, Field(ge=1.0, le=3.0)] = 1.2
    pools: tuple[PoolSettings, ...] = ()
    # Connector-specific settings (kubeconfig path, AWS profile...), by reference only.
    connector: dict[str, Any] = Field(default_factory=dict)

    @property
    def latency_key(self) -> str:
        return self.location or f"{self.kind.value}:{self.region}"


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
    sites: tuple[SiteSettings, ...] = ()
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


Backend = Literal["sqlite", "postgresql"]


def normalise_database_url(url: str) -> str:
    """Accept plain `postgresql://` and `sqlite:///` URLs and pick the async drivers."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url
