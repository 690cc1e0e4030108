"""Convert an Alibaba openb pod list (cluster-trace-gpu-v2023) into the canonical trace.

Columns, as in `alibaba/clusterdata` `cluster-trace-gpu-v2023/README.md` and the header of
`csv/openb_pod_list_default.csv`: `name, cpu_milli, memory_mib, num_gpu, gpu_milli,
gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time` (times in seconds;
`gpu_milli` is the share of one GPU of a GPU-sharing pod, `num_gpu` = 1; `gpu_spec` lists
allowed models separated by `|`, empty = any; `scheduled_time` is empty for a pod never
scheduled). Mapping (docs/traces.md repeats it):

* `cpu` = cpu_milli / 1000 cores, `memory_gb` = memory_mib / 1024, `gpus` = num_gpu on
  one node (a pod is one node); num_gpu = 0 gives a CPU-only row.
* `gpu_fraction` = gpu_milli / 1000 when num_gpu = 1 and 0 < gpu_milli < 1000.
* `gpu_models`: each `gpu_spec` name through `broker.simulation.alibaba.broker_model`, so
  it names the pools `broker.simulation.fleets` builds from the node list (pass the same
  `--undisclosed-as` to both).
* `tier` from `qos`: LS (latency-sensitive) → P1, Guaranteed and Burstable → P2, BE
  (best-effort) → P3; kind follows the tier as in the other converters.
* `submit_s` = creation_time − the first kept pod's; `duration_s` = deletion_time −
  scheduled_time (rounded up). A pod with no scheduled_time never ran; it is dropped and
  counted, as is one whose run time is ≤ 0 or that asks for neither GPU nor CPU. Pods still
  Running at the end of the collection have the collection end as deletion_time, so their
  run times are lower bounds.
* `tenant` = `openb` (the trace has no user or team); no origin; P2/P3 deadline = submit +
  duration + slack as in the other converters.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from broker.domain.enums import JobKind, Tier
from broker.simulation.alibaba import UnknownAlibabaModel, broker_model
from broker.simulation.sources import source_number, source_rows
from broker.simulation.traces import TraceError, TraceJob

COLUMNS = (
    "name",
    "cpu_milli",
    "memory_mib",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "creation_time",
    "deletion_time",
    "scheduled_time",
)
TIERS = {"LS": Tier.P1, "Guaranteed": Tier.P2, "Burstable": Tier.P2, "BE": Tier.P3}
KIND = {Tier.P1: JobKind.INFERENCE, Tier.P2: JobKind.TRAINING, Tier.P3: JobKind.EXPERIMENT}
TENANT = "openb"
MILLI = 1000
MIB_PER_GB = 1024
DAY_S = 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenbConversion:
    """The converted pods and what was left out, by reason."""

    jobs: list[TraceJob]
    read: int
    never_scheduled: int
    no_run_time: int  # deletion_time ≤ scheduled_time
    no_resources: int  # no GPU and no CPU
    outside_window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Pod:
    name: str
    created: float
    duration_s: int
    gpus: int
    fraction: float | None
    models: tuple[str, ...]
    tier: Tier
    cpu: float
    memory_gb: float


def _pod(row: dict[str, str], *, path: Path, line: int, undisclosed_as: str | None) -> _Pod:
    def fail(column: str, reason: str) -> TraceError:
        return TraceError(f"{path}: line {line}: column {column!r}: {reason}", line=line)

    gpus = int(source_number(row, "num_gpu", path=path, line=line))
    milli = source_number(row, "gpu_milli", path=path, line=line) if row["gpu_milli"] else 0.0
    try:
        tier = TIERS[row["qos"]]
    except KeyError:
        raise fail("qos", f"expected one of {', '.join(TIERS)}, got {row['qos']!r}") from None
    spec = row["gpu_spec"].strip()
    try:
        names = spec.split("|") if spec else []
        models = tuple(dict.fromkeys(broker_model(m, undisclosed_as=undisclosed_as) for m in names))
    except UnknownAlibabaModel as exc:
        raise fail("gpu_spec", str(exc)) from None
    created = source_number(row, "creation_time", path=path, line=line)
    start = source_number(row, "scheduled_time", path=path, line=line)
    end = source_number(row, "deletion_time", path=path, line=line)
    return _Pod(
        name=row["name"],
        created=created,
        duration_s=math.ceil(end - start),
        gpus=gpus,
        fraction=milli / MILLI if gpus == 1 and 0 < milli < MILLI else None,
        models=models,
        tier=tier,
        cpu=source_number(row, "cpu_milli", path=path, line=line) / MILLI,
        memory_gb=source_number(row, "memory_mib", path=path, line=line) / MIB_PER_GB,
    )


def convert_openb(
    path: Path,
    *,
    undisclosed_as: str | None = None,
    start_day: float | None = None,
    days: float | None = None,
    limit: int | None = None,
    deadline_slack_h: float = 24.0,
) -> OpenbConversion:
    """Read and convert an openb pod list (see the module docstring for the mapping)."""
    read = never = no_time = no_res = 0
    pods: list[_Pod] = []
    for line, row in source_rows(path, required=COLUMNS):
        read += 1
        if not row["scheduled_time"].strip():
            never += 1
            continue
        pod = _pod(row, path=path, line=line, undisclosed_as=undisclosed_as)
        if pod.duration_s <= 0:
            no_time += 1
        elif pod.gpus <= 0 and pod.cpu <= 0:
            no_res += 1
        else:
            pods.append(pod)
    valid = len(pods)
    lo = -math.inf if start_day is None else start_day * DAY_S
    hi = math.inf if days is None else (start_day or 0.0) * DAY_S + days * DAY_S
    kept = sorted((p for p in pods if lo <= p.created < hi), key=lambda p: p.created)[:limit]
    t0 = kept[0].created if kept else 0.0
    slack = deadline_slack_h * 3600
    jobs = []
    for p in kept:
        submit = p.created - t0
        jobs.append(
            TraceJob(
                job_id=p.name,
                submit_s=submit,
                duration_s=p.duration_s,
                gpus=p.gpus,
                gpu_fraction=p.fraction,
                nodes=1,
                gpu_models=p.models if p.gpus > 0 else (),
                tier=p.tier,
                tenant=TENANT,
                deadline_s=None if p.tier is Tier.P1 else submit + p.duration_s + slack,
                origin=None,
                preemptible=None,
                kind=KIND[p.tier],
                cpu=p.cpu,
                memory_gb=p.memory_gb,
            )
        )
    return OpenbConversion(
        jobs=jobs,
        read=read,
        never_scheduled=never,
        no_run_time=no_time,
        no_resources=no_res,
        outside_window=valid - len(kept),
    )


def openb_summary(result: OpenbConversion) -> str:
    """A one-paragraph account of a conversion, for the CLI."""
    n = len(result.jobs)
    tiers = Counter(j.tier for j in result.jobs)
    shares = ", ".join(f"{t.value} {tiers[t]} ({tiers[t] / max(n, 1):.0%})" for t in Tier)
    cpu_only = sum(1 for j in result.jobs if j.gpus == 0)
    fractional = sum(1 for j in result.jobs if j.gpu_fraction is not None)
    pinned = sum(1 for j in result.jobs if j.gpu_models)
    return (
        f"read {result.read} pods; dropped {result.never_scheduled} never scheduled, "
        f"{result.no_run_time} with run time ≤ 0, {result.no_resources} asking for no GPU or "
        f"CPU; {result.outside_window} outside the window or limit; wrote {n} ({shares}; "
        f"{cpu_only} CPU-only, {fractional} fractional, {pinned} pinned to GPU models)"
    )
