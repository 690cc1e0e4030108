"""The `carbon:` section of the broker's settings: which sources answer for which zone.

With no section at all the broker uses the shipped static table (annual means, no account
needed). Each live provider is switched on by giving its settings; keys only by reference
(see `carbon.live.settings`). Per zone, the chain `carbon.wiring` builds is

    live providers (in `order`) -> their cached answers -> own forecast from the hours they
    reported -> replay (own forecast) -> static

so a provider's outage degrades the numbers (marked stale or estimated) and never stops the
scheduler. The broker's own forecaster runs over the replayed history and sits after the
live providers, so it fills only the hours they leave open (the rule in
`carbon.forecast.source`: a provider's forecast wins where there is one).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carbon.basis import DeploymentBasis
from carbon.live.settings import (
    ElectricityMapsSettings,
    UKCarbonIntensitySettings,
    WattTimeSettings,
)

__all__ = ["CarbonSettings", "ProviderName", "ReplaySettings"]

ProviderName = Literal["electricitymaps", "watttime", "uk_carbon_intensity"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ReplaySettings(_Strict):
    """Recorded hourly series (`carbon/data` format: zone,datetime_utc,gco2_per_kwh...).

    For demos and staging: the series play as if they were live, looped over their length.
    `forecast: own` hides the future from the scheduler and forecasts it with the broker's
    own model (realistic error); `perfect` lets the scheduler see the recorded future.
    """

    files: Annotated[tuple[str, ...], Field(min_length=1)]  # relative to the config file
    aliases: dict[str, str] = Field(default_factory=dict)  # site zone -> series region
    forecast: Literal["own", "perfect"] = "own"
    # Basis of the files' `gco2_per_kwh` column. The shared normalized files are all
    # lifecycle (their README); a `gco2_per_kwh_direct` column adds operational values.
    file_basis: DeploymentBasis = "lifecycle"


class CarbonSettings(_Strict):
    # The accounting basis of every number the broker uses (docs/carbon.md, "Accounting
    # basis"). Lifecycle by default: every hourly series in the shared data (Electricity
    # Maps exports, Let's Wait Awhile, EIA-930) and the Electricity Maps API default are
    # lifecycle, and the shipped table has a lifecycle value for every zone of the shipped
    # fleets. `operational` suits the GB API (operational only) and Google-style reporting.
    # A source that cannot serve the basis is refused when the chain is built.
    basis: DeploymentBasis = "lifecycle"
    # Overrides the shipped table of annual means (zone,gco2_per_kwh,year,basis,source).
    static_table: str | None = None
    electricitymaps: ElectricityMapsSettings | None = None
    watttime: WattTimeSettings | None = None
    uk_carbon_intensity: UKCarbonIntensitySettings | None = None
    # Which configured providers are asked first; unlisted configured ones follow.
    order: tuple[ProviderName, ...] = ("uk_carbon_intensity", "watttime", "electricitymaps")
    replay: ReplaySettings | None = None
    # With live providers: learn each zone from the hours they reported and forecast the
    # hours none of them forecasts (after them in the chain, before the static table).
    own_forecast: bool = True
    # How far ahead the broker's own forecaster serves.
    forecast_horizon_h: Annotated[int, Field(ge=1, le=168)] = 48

    @model_validator(mode="after")
    def _one_basis(self) -> CarbonSettings:
        # Known from the settings alone, so reported with the config (`carbon.wiring`
        # checks the same again on the built sources, and the table and replay files).
        if self.watttime is not None:
            raise ValueError(
                "watttime serves the marginal basis (MOER), a different signal from the "
                f"{self.basis} average intensity of carbon.basis: it is never mixed into "
                "the chain; remove the watttime section"
            )
        if self.uk_carbon_intensity is not None and self.basis != "operational":
            raise ValueError(
                "uk_carbon_intensity serves the operational basis only, but carbon.basis is "
                f"{self.basis}: set carbon.basis: operational or remove uk_carbon_intensity"
            )
        em = self.electricitymaps
        if em is not None and em.emission_factor_type is not None:
            asked = "operational" if em.emission_factor_type == "direct" else "lifecycle"
            if asked != self.basis:
                raise ValueError(
                    f"electricitymaps.emission_factor_type {em.emission_factor_type} is the "
                    f"{asked} basis but carbon.basis is {self.basis}: leave it out (the "
                    "source asks for carbon.basis) or make the two agree"
                )
        return self

    @property
    def live_configured(self) -> bool:
        """Whether any live provider is set (and so an HTTP session is needed)."""
        return any((self.electricitymaps, self.watttime, self.uk_carbon_intensity))
