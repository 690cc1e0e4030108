"""The services' settings (`serving:` in the config)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: Annotated[float, Field(gt=0)] = 2.0  # the controller's tick
    # Where services' load comes from: `trace` (the demo fleet's replayed trace) or
    # `prometheus` (each service's `autoscaling.load_query` against `prometheus_url`).
    load: Literal["trace", "prometheus"] = "trace"
    prometheus_url: str | None = None  # e.g. http://prometheus.monitoring:9090
    prometheus_token_file: Path | None = None  # a bearer token, if Prometheus wants one
    prometheus_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    @model_validator(mode="after")
    def _prometheus_needs_a_url(self) -> ServingSettings:
        if self.load == "prometheus" and not self.prometheus_url:
            raise ValueError("serving.load prometheus needs serving.prometheus_url")
        return self

    load_retention_h: Annotated[float, Field(gt=0)] = 8 * 24.0  # per-minute load history kept
    refit_s: Annotated[float, Field(gt=0)] = 900.0  # refit each service's load forecaster
    # The demo fleet's load: requests per minute of a replayed trace (a CSV with a `minute`
    # column and one column per trace), played `sim_speed` trace seconds per wall second
    # and scaled so its busiest minute is `sim_peak` of what `max_replicas` can take.
    sim_trace: Path | None = None  # default: the shipped Azure LLM 2023 per-minute trace
    sim_column: str = "code_requests"  # has idle minutes, so scale to zero shows
    sim_speed: Annotated[float, Field(gt=0)] = 60.0
    sim_peak: Annotated[float, Field(gt=0, le=2)] = 0.8
