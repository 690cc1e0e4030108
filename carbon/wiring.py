"""Build the broker's carbon source from its `carbon:` settings.

The result is one `CarbonSource` for the scheduler, the accountant and the reports: a
`FallbackSource` whose chain for every zone is live providers -> their cached answers ->
replay/own forecast -> static table. A provider whose key cannot be read is left out with
a warning naming where the key should be (never the key): the broker still schedules on
what remains, and `broker check` reports the missing key.

Every part is built for the deployment's basis (`carbon.basis`): Electricity Maps is asked
for it, the static table and the replay read their values in it, the own forecasters stamp
it. A part that cannot serve it (the GB API under lifecycle, WattTime's marginal signal, a
table or replay file without that basis) is refused here with a `BasisMismatch` naming the
part and the basis, before anything is asked; never converted silently, never mixed.

`refresh` asks every chain for the next hours of each zone, which fills the live caches
ahead of the scheduler's passes; the scheduled `refresh_carbon` job calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp

from carbon.base import CarbonSource
from carbon.basis import DeploymentBasis, check_basis
from carbon.forecast.source import ForecastingSource
from carbon.live.base import LiveSource
from carbon.live.electricitymaps import ElectricityMapsSource
from carbon.live.errors import SourceError
from carbon.live.fallback import FallbackSource
from carbon.live.settings import (
    ElectricityMapsSettings,
    UKCarbonIntensitySettings,
    WattTimeSettings,
)
from carbon.live.uk import UKCarbonIntensitySource
from carbon.live.watttime import WattTimeSource
from carbon.recorded import Observed, RecordedHistory, observed
from carbon.replay import ReplaySource
from carbon.settings import CarbonSettings, ProviderName
from carbon.static import StaticTableSource

__all__ = ["CarbonSetup", "build_carbon"]

log = logging.getLogger(__name__)

_DAY = timedelta(hours=24)


class _Clock:
    """Adapts a `now()` callable to the clock protocol the forecaster takes."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now


@dataclass(slots=True, kw_only=True)
class CarbonSetup:
    """The source the broker uses, and what it is made of (for checks and status)."""

    source: CarbonSource
    live: dict[str, LiveSource] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # provider -> why it is off
    forecaster: ForecastingSource | None = None  # over replayed history
    recorded: RecordedHistory | None = None  # what the live providers reported
    _observed: list[Observed] = field(default_factory=list)

    @property
    def description(self) -> str:
        parts = [
            *self.live,
            *(["own forecast"] if self.recorded is not None else []),
            *(["replay"] if self.forecaster else []),
            "static",
        ]
        return " -> ".join(parts)

    async def refresh(self, zones: Iterable[str], *, now: datetime, hours: int = 24) -> str:
        """Fetch the next `hours` of every zone through the chain, and record the past day's
        observed hours for the own forecaster (`take_observed`); a one-line summary."""
        answered, learned, failed = 0, 0, []
        for zone in sorted(set(zones)):
            try:
                readings = await self.source.forecast(
                    zone, start=now, end=now + timedelta(hours=hours)
                )
                if self.recorded is not None:
                    past = await self.source.forecast(zone, start=now - _DAY, end=now)
                    seen = observed(past, before=now)
                    learned += self.recorded.add(seen)
                    self._observed += seen
            except SourceError as exc:
                failed.append(f"{zone} ({exc})")
                continue
            answered += bool(readings)
        summary = f"carbon outlook refreshed for {answered} zone(s) via {self.description}"
        if self.recorded is not None:
            summary += f", {learned} observed hour(s) recorded"
        return summary + (f"; no answer for {', '.join(failed)}" if failed else "")

    def take_observed(self) -> list[Observed]:
        """The observations recorded since the last call, for the owner to persist."""
        taken, self._observed = self._observed, []
        return taken


def build_carbon(
    settings: CarbonSettings | None,
    *,
    session: aiohttp.ClientSession | None,
    now: Callable[[], datetime],
    config_dir: Path,
) -> CarbonSetup:
    """The configured chain; `session` is needed only when a live provider is configured."""
    settings = settings or CarbonSettings()
    basis = settings.basis
    static = (
        StaticTableSource.from_csv(_resolve(config_dir, settings.static_table), basis=basis)
        if settings.static_table
        else StaticTableSource.default(basis=basis)
    )
    live, skipped = _live_sources(settings, session=session, now=now, config_dir=config_dir)
    forecaster: ForecastingSource | None = None
    history: list[CarbonSource] = []
    if settings.replay is not None:
        replay = ReplaySource.from_csv(
            [_resolve(config_dir, f) for f in settings.replay.files],
            aliases=settings.replay.aliases,
            wrap=True,
            basis=basis,
            file_basis=settings.replay.file_basis,
        )
        if settings.replay.forecast == "own":
            forecaster = ForecastingSource(
                replay, clock=_Clock(now), horizon_h=settings.forecast_horizon_h, basis=basis
            )
            history.append(forecaster)
        else:
            history.append(replay)
    chain: list[CarbonSource] = [*live.values(), *(s.cached() for s in live.values())]
    recorded: RecordedHistory | None = None
    if live and settings.own_forecast:
        recorded = RecordedHistory()
        chain.append(
            ForecastingSource(
                recorded, clock=_Clock(now), horizon_h=settings.forecast_horizon_h, basis=basis
            )
        )
    chain += [*history, static]
    source = FallbackSource({}, default=chain) if len(chain) > 1 else static
    return CarbonSetup(
        source=source, live=live, skipped=skipped, forecaster=forecaster, recorded=recorded
    )


def _live_sources(
    settings: CarbonSettings,
    *,
    session: aiohttp.ClientSession | None,
    now: Callable[[], datetime],
    config_dir: Path,
) -> tuple[dict[str, LiveSource], dict[str, str]]:
    configured: dict[ProviderName, object] = {
        "uk_carbon_intensity": settings.uk_carbon_intensity,
        "watttime": settings.watttime,
        "electricitymaps": settings.electricitymaps,
    }
    order = [*settings.order, *(p for p in configured if p not in settings.order)]
    live: dict[str, LiveSource] = {}
    skipped: dict[str, str] = {}
    for name in order:
        provider = configured[name]
        if provider is None or name in live:
            continue
        if session is None:
            raise ValueError("live carbon providers need an aiohttp session")
        try:
            made = _make(
                provider, session=session, now=now, config_dir=config_dir, basis=settings.basis
            )
        except SourceError as exc:  # a key that cannot be read: its message names the place
            log.warning("carbon provider %s is off: %s", name, exc)
            skipped[name] = str(exc)
            continue
        check_basis(made.name, offers=made.bases, wanted=settings.basis)
        live[name] = made
    return live, skipped


def _make(
    provider: object,
    *,
    session: aiohttp.ClientSession,
    now: Callable[[], datetime],
    config_dir: Path,
    basis: DeploymentBasis,
) -> LiveSource:
    if isinstance(provider, ElectricityMapsSettings):
        if provider.api_key_file is not None:
            provider = provider.model_copy(
                update={"api_key_file": _resolve(config_dir, str(provider.api_key_file))}
            )
        return ElectricityMapsSource(provider, session=session, clock=now, basis=basis)
    if isinstance(provider, WattTimeSettings):
        if provider.password_file is not None:
            provider = provider.model_copy(
                update={"password_file": _resolve(config_dir, str(provider.password_file))}
            )
        return WattTimeSource(provider, session=session, clock=now)
    if isinstance(provider, UKCarbonIntensitySettings):
        return UKCarbonIntensitySource(provider, session=session, clock=now)
    raise TypeError(f"not a live carbon provider's settings: {type(provider).__name__}")


def _resolve(config_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else config_dir / p
