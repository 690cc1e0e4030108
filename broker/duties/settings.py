"""Settings for the scheduled work: the leader lease and how often each duty runs."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

_Seconds = Annotated[float, Field(gt=0)]


class ScheduleSettings(BaseModel):
    """Intervals in seconds. Only the replica holding the lease runs the jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # False: this replica never competes for the lease
    # A leader stops its jobs a third of the ttl before its lease would lapse unrenewed, so
    # that a successor (which waits for the full ttl) never overlaps it; the slack absorbs
    # clock skew between replicas and the time the scheduler takes to stop.
    lease_ttl_s: _Seconds = 15.0
    renew_s: _Seconds = 5.0  # also how often a follower tries to take over
    retrain_every_s: _Seconds = 86400.0  # refit the demand forecast
    plan_every_s: _Seconds = 300.0  # capacity plan from the forecast
    carbon_every_s: _Seconds = 900.0  # grid intensity and forecasts
    inventory_every_s: _Seconds = 60.0  # sites' GPU pools and prices
    reclaim_every_s: _Seconds = 120.0  # give back idle burst capacity

    @property
    def lease_margin_s(self) -> float:
        """How long before its lease's expiry a leader that could not renew stops."""
        return self.lease_ttl_s / 3

    @model_validator(mode="after")
    def _renew_before_margin(self) -> ScheduleSettings:
        # At least one renewal attempt must fall between a successful renewal and the
        # moment the leader gives up, or a healthy leader would step down every cycle.
        if self.renew_s >= self.lease_ttl_s - self.lease_margin_s:
            raise ValueError("renew_s must be below two thirds of lease_ttl_s")
        return self
