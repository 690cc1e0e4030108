"""How long a job runs on a GPU model: its estimate scaled by relative throughput.

`JobSpec.estimated_duration_s` is measured on the job's reference model
(`JobSpec.reference_gpu_model`, default `carbon.performance.DEFAULT_REFERENCE`). Both the
explain path and the scheduler's arrays, the simulator and deferral ask here, so a job is
costed, emitted and timed for the same run everywhere. Inference jobs use the `inference`
class; training and experiments the `training` class (an experiment is a short training
run far more often than a served model).
"""

from __future__ import annotations

from broker.domain.enums import JobKind
from broker.domain.jobs import JobSpec
from carbon.performance import DEFAULT_REFERENCE, ThroughputTable, WorkloadClass

_CLASS = {
    JobKind.INFERENCE: WorkloadClass.INFERENCE,
    JobKind.TRAINING: WorkloadClass.TRAINING,
    JobKind.EXPERIMENT: WorkloadClass.TRAINING,
}


def workload_class(kind: JobKind) -> WorkloadClass:
    return _CLASS[kind]


def reference_model(spec: JobSpec) -> str:
    return spec.reference_gpu_model or DEFAULT_REFERENCE


def run_factor(spec: JobSpec, model: str, table: ThroughputTable) -> float | None:
    """Seconds on `model` per second of the estimate; None when there is no figure (the
    performance rule keeps such pools out of every ranking)."""
    cls = workload_class(spec.kind)
    ref = reference_model(spec)
    if not table.knows(model=model, reference=ref, workload=cls):
        return None
    return table.run_factor(model=model, reference=ref, workload=cls)


def scaled_s(estimate_s: int, factor: float) -> int:
    """A run time in whole seconds (deferral and the simulator step in seconds), at least 1."""
    return max(1, round(estimate_s * factor))


def run_seconds(spec: JobSpec, model: str, table: ThroughputTable) -> int:
    """The job's run time on `model`; raises NoThroughputFigure when it has no figure."""
    factor = table.run_factor(
        model=model, reference=reference_model(spec), workload=workload_class(spec.kind)
    )
    return scaled_s(spec.estimated_duration_s, factor)
