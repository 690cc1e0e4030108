"""Relative GPU throughput per model and workload class, and a job's run time on a model.

A job's `estimated_duration_s` is measured on one GPU model, its reference (default
`A100-80GB`, the reference of the shipped table). On another model it runs
``duration × rel(reference, class) / rel(model, class)``, where `rel` is throughput relative to
A100-80GB for the job's workload class (`training` or `inference`).

The shipped figures (`carbon/data/gpu_throughput.csv`, sources in `gpu_throughput.md`) are
measured ratios only; a model with no usable measurement is a gap, never 1.0. A deployment
fills gaps (or replaces figures) with `scheduler.gpu_throughput`; overrides win over the
table. Asking for a gap raises `NoThroughputFigure`, naming the model, the class and the
setting that fixes it. Pure: no I/O but reading the packaged table once.
"""

from __future__ import annotations

import csv
import enum
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "DEFAULT_REFERENCE",
    "UNIFORM",
    "NoThroughputFigure",
    "ThroughputTable",
    "WorkloadClass",
    "shipped_table",
]

DEFAULT_REFERENCE = "A100-80GB"
OVERRIDE_SETTING = "scheduler.gpu_throughput"


class WorkloadClass(enum.StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class NoThroughputFigure(LookupError):
    """No measured or configured throughput for a GPU model in a workload class."""

    def __init__(self, model: str, workload: WorkloadClass) -> None:
        super().__init__(model, workload)
        self.model = model
        self.workload = workload

    def __str__(self) -> str:
        return (
            f"no {self.workload.value} throughput figure for GPU model {self.model!r}; "
            f"set {OVERRIDE_SETTING}.{self.model}.{self.workload.value} (relative to "
            f"{DEFAULT_REFERENCE} = 1.0)"
        )


Figures = tuple[tuple[str, WorkloadClass, float], ...]


@dataclass(frozen=True, slots=True)
class ThroughputTable:
    """Throughput relative to A100-80GB by (upper-cased model, class); hashable, so rule
    tables can be cached per table."""

    figures: Figures  # sorted (model, class, value), model upper-cased
    # every model at the reference's speed and no gap: the behaviour before the performance
    # model, kept as the default until deployments configure their fleets (UNIFORM)
    uniform: bool = False

    @classmethod
    def of(cls, values: Mapping[tuple[str, WorkloadClass], float]) -> ThroughputTable:
        rows = []
        for (model, workload), value in values.items():
            if not (0.0 < value < math.inf):
                raise ValueError(f"throughput of {model} {workload} must be > 0, got {value}")
            rows.append((model.strip().upper(), WorkloadClass(workload), float(value)))
        return cls(tuple(sorted(rows)))

    def with_overrides(
        self, overrides: Mapping[str, Mapping[WorkloadClass | str, float]]
    ) -> ThroughputTable:
        """This table with `overrides` ({model: {class: value}}) winning over its figures."""
        if not overrides:
            return self
        merged = {(m, w): v for m, w, v in self.figures}
        for model, by_class in overrides.items():
            for workload, value in by_class.items():
                merged[(model.strip().upper(), WorkloadClass(workload))] = value
        return ThroughputTable.of(merged)

    def get(self, model: str, workload: WorkloadClass) -> float | None:
        return _as_dict(self).get((model.strip().upper(), workload))

    def relative(self, model: str, workload: WorkloadClass) -> float:
        """Throughput of `model` relative to A100-80GB; raises NoThroughputFigure on a gap."""
        value = self.get(model, workload)
        if value is None:
            raise NoThroughputFigure(model, workload)
        return value

    def knows(self, *, model: str, reference: str, workload: WorkloadClass) -> bool:
        """Whether a job measured on `reference` has a run time on `model`."""
        if self.uniform or _same(model, reference):
            return True
        return self.get(model, workload) is not None and self.get(reference, workload) is not None

    def spread(self) -> float:
        """The largest run-time factor any pair of figures gives (slowest over fastest in a
        class): how much longer than its estimate a job may run; 1.0 when uniform."""
        if self.uniform:
            return 1.0
        out = 1.0
        for workload in WorkloadClass:
            values = [v for _, w, v in self.figures if w is workload]
            if values:
                out = max(out, max(values) / min(values))
        return out

    def run_factor(self, *, model: str, reference: str, workload: WorkloadClass) -> float:
        """Run time on `model` per second measured on `reference` (1.0 on the reference
        itself, figure or not); raises NoThroughputFigure on a gap."""
        if self.uniform or _same(model, reference):
            return 1.0
        return self.relative(reference, workload) / self.relative(model, workload)


UNIFORM = ThroughputTable((), uniform=True)


def _same(a: str, b: str) -> bool:
    return a.strip().upper() == b.strip().upper()


@cache
def _as_dict(table: ThroughputTable) -> dict[tuple[str, WorkloadClass], float]:
    return {(m, w): v for m, w, v in table.figures}


def parse_table(text: str) -> ThroughputTable:
    """The CSV format of `carbon/data/gpu_throughput.csv`; an empty figure is a gap."""
    values: dict[tuple[str, WorkloadClass], float] = {}
    for row in csv.DictReader(io.StringIO(text)):
        figure = row["relative_throughput"].strip()
        if figure:
            values[(row["gpu_model"], WorkloadClass(row["workload_class"]))] = float(figure)
    return ThroughputTable.of(values)


@cache
def shipped_table() -> ThroughputTable:
    """The packaged table (read once)."""
    text = (
        resources.files("carbon")
        .joinpath("data")
        .joinpath("gpu_throughput.csv")
        .read_text(encoding="utf-8")
    )
    return parse_table(text)
