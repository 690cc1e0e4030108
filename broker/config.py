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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.burst.settings import BurstSettings
from broker.db.connection import DEFAULT_DATABASE_URL
from broker.domain.enums import Role, SiteKind
from broker.domain.errors import ConfigError
from broker.domain.latency import LatencyMatrix
from broker.duties.settings import ScheduleSettings
from broker.scheduling.settings import SchedulerSettings
from broker.serving.settings import ServingSettings
from carbon.power import GPU_MODELS, GpuModelSpec, power_table
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
    # Whether `GET /metrics` needs the bearer token of an operator or admin (else 401/403).
    # Its figures are fleet-wide (every tenant's jobs by state, burst spend per site), which
    # the API keeps to operators; Prometheus sends the token with `authorization:
    # {credentials_file: ...}` in its scrape config. Off in the demo config only.
    metrics_token_required: bool = True

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


class GpuModelSettings(_Strict):
    """Figures for a GPU model `carbon.power.GPU_MODELS` lacks (or whose row is wrong for
    your boards, e.g. a PCIe card): maximum board power in watts and memory per GPU in GB.
    Energy and emissions are computed from them, so a model without them is refused."""

    board_power_w: Annotated[int, Field(gt=0, le=5000)]
    memory_gb: Annotated[int, Field(gt=0, le=4096)]


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
    serving: ServingSettings = ServingSettings()
    # Power and memory of GPU models beyond the shipped datasheet table, by the exact name
    # pools use (`gpu_models: {RTX6000-ADA: {board_power_w: 300, memory_gb: 48}}`); also
    # replaces a shipped row of the same name. Declared before `sites`, which are checked
    # against it: a pool naming a model with no power figure is refused at load.
    gpu_models: dict[str, GpuModelSettings] = Field(default_factory=dict)
    sites: tuple[SiteSettings, ...] = ()  # fields documented in `connectors.settings`
    # Threads for blocking provider-SDK calls (Kubernetes, boto3, google-cloud-compute),
    # one pool shared by every connector: it bounds how many such calls run at once, so a
    # slow provider queues its own calls instead of starving the event loop or the host.
    sdk_threads: Annotated[int, Field(ge=1, le=256)] = DEFAULT_THREADS
    config_dir: Path = Path(".")

    @field_validator("gpu_models")
    @classmethod
    def _model_names(cls, v: dict[str, GpuModelSettings]) -> dict[str, GpuModelSettings]:
        for name in v:
            if not name or name != name.strip() or "|" in name:
                raise ValueError(f"bad GPU model name {name!r}")
        return v

    @field_validator("sites")
    @classmethod
    def _pools_have_power(
        cls, v: tuple[SiteSettings, ...], info: ValidationInfo
    ) -> tuple[SiteSettings, ...]:
        overrides = info.data.get("gpu_models")
        if overrides is None:  # gpu_models is itself invalid, and reported
            return v
        known = set(GPU_MODELS) | set(overrides)
        for i, site in enumerate(v):
            for j, pool in enumerate(site.pools):
                if pool.gpu_model not in known:
                    raise ValueError(unknown_model_message(pool.gpu_model, where=(i, site.name, j)))
        return v

    def power_table(self) -> Mapping[str, GpuModelSpec]:
        """The datasheet table with `gpu_models` applied: what energy figures must read."""
        return power_table(
            {
                name: GpuModelSpec(name, memory_gb=m.memory_gb, board_power_w=m.board_power_w)
                for name, m in self.gpu_models.items()
            }
        )

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
        problems = quota_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def fleet_gpus(self) -> int | None:
        """GPUs of the configured pools; None when the fleet is not all in this file (a
        site that discovers its pools, or burst targets that add nodes)."""
        if not self.sites or self.burst.targets or any(not s.pools for s in self.sites):
            return None
        return sum(p.nodes * p.gpus_per_node for s in self.sites for p in s.pools)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.config_dir / p


def quota_problems(settings: Settings) -> list[str]:
    """What is wrong with `scheduler.quotas` given the rest of the settings: tenants no
    token names (a typo would silently give nobody the guarantee) and guarantees or caps
    the configured fleet cannot hold."""
    quotas = settings.scheduler.quotas
    out: list[str] = []
    tenants = {t.tenant for t in settings.auth.tokens}
    if tenants:
        for tenant in sorted(set(quotas) - tenants):
            out.append(
                f"scheduler.quotas.{tenant}: no token has tenant {tenant!r} "
                f"(known: {', '.join(sorted(tenants))})"
            )
    fleet = settings.fleet_gpus()
    if fleet is None:
        return out
    nominal = 0.0
    for tenant, by_tier in sorted(quotas.items()):
        for tier, q in sorted(by_tier.items()):
            nominal += q.nominal
            top = q.nominal if q.cap is None else q.cap
            if top > fleet:
                what = "nominal" if q.cap is None else "cap (nominal + borrowing_limit)"
                out.append(
                    f"scheduler.quotas.{tenant}.{tier.value}: its {what} of {top:g} GPUs is "
                    f"above the {fleet} GPUs of the configured sites"
                )
    if nominal > fleet:
        out.append(
            f"scheduler.quotas: the nominal quotas add up to {nominal:g} GPUs, more than the "
            f"{fleet} GPUs of the configured sites can guarantee at once"
        )
    return out


def unknown_model_message(model: str, *, where: tuple[int, str, int]) -> str:
    """Why a pool's GPU model is refused, and the setting that fixes it."""
    i, site, j = where
    near = [m for m in GPU_MODELS if m.upper() == model.strip().upper()]
    hint = f"did you mean {near[0]!r}? or " if near else ""
    return (
        f"site {site!r} pool {j} (sites.{i}.pools.{j}.gpu_model) names GPU model {model!r}, "
        f"which has no power figure: {hint}add it to the top-level setting "
        f"`gpu_models: {{{model}: {{board_power_w: <W>, memory_gb: <GB>}}}}` "
        f"(known: {', '.join(sorted(GPU_MODELS))})"
    )


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
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not UTF-8 text: {exc.reason}") from exc
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
        if e["loc"]
        else f"  {e['msg'].removeprefix('Value error, ')}"
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
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            try:
                return LatencyMatrix.from_rows(
                    (row["src"], row["dst"], float(row["rtt_ms"])) for row in reader
                )
            except (KeyError, TypeError, ValueError, csv.Error) as exc:
                raise ConfigError(
                    f"latency file {path} (latency.file), line {reader.line_num}: expected "
                    f"columns src,dst,rtt_ms with a number of ms ({type(exc).__name__}: {exc})"
                ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read latency file {path} (latency.file): {exc.strerror}"
        ) from exc
