"""Plain-text views of API responses: aligned columns, no dependency, no colour.

Every function takes the decoded JSON exactly as the API sent it and returns text; none
prints or talks to the network, so each view can be tested alone. Cells are made printable
(a newline or an escape sequence in a job name cannot break the columns or the terminal),
and times are shown in UTC, which is what the API returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Json = Mapping[str, Any]

GAP = "  "
NONE = "-"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: frozenset[int] = frozenset()
) -> str:
    """Columns padded to their widest cell; columns whose index is in `right` align right."""
    cells = [[_cell(h) for h in headers], *([_cell(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append(GAP.join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """A two-column `KEY  value` block, for one object."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}{GAP}{_cell(v)}".rstrip() for k, v in pairs)


def _cell(value: object) -> str:
    if value is None:
        return NONE
    text = value if isinstance(value, str) else str(value)
    return "".join(ch if ch.isprintable() else " " for ch in text)


def num(value: float | None, *, digits: int = 2) -> str:
    """`4` for 4.0, `0.143` for 0.143, `-` for unknown."""
    if value is None:
        return NONE
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def when(iso: str | None) -> str:
    """An API timestamp as `2026-11-23 16:09:21Z`."""
    if iso is None:
        return NONE
    return _parse(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(iso: str, *, now: datetime) -> str:
    """How long ago, in the largest whole unit: `42s`, `5m`, `3h`, `2d`."""
    seconds = max(0, int((now - _parse(iso)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse(iso: str) -> datetime:
    parsed = datetime.fromisoformat(iso)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def job_summary(job: Json) -> str:
    """The short answer to a submit or a cancel."""
    return table(
        ["ID", "NAME", "PRIORITY", "STATE"],
        [[job["id"], job["name"], job["priority"], job["state"]]],
    )


def job_list(jobs: Sequence[Json], *, now: datetime) -> str:
    rows = [
        [
            j["id"],
            j["name"],
            j["tenant"],
            j["priority"],
            j["kind"],
            state_cell(j),
            age(j["created_at"], now=now),
        ]
        for j in jobs
    ]
    return table(
        ["ID", "NAME", "TENANT", "PRIORITY", "KIND", "STATE", "AGE"], rows, right=frozenset({6})
    )


def state_cell(job: Json) -> str:
    """The state, with why when the job has a condition: `pending (QuotaCapReached)`."""
    c = job.get("condition")
    state: str = job["state"]
    return state + (f" ({c['reason']})" if c else "")


def condition_line(c: Json | None) -> str:
    if not c:
        return NONE
    return f"{c['type']} {c['reason']} since {when(c['since'])}: {c['message']}"


def job_detail(job: Json) -> str:
    spec = job["spec"]
    res = spec["resources"]
    state = job["state"] + (f" ({job['state_reason']})" if job.get("state_reason") else "")
    blocks = [
        fields(
            [
                ("ID", job["id"]),
                ("NAME", job["name"]),
                ("TENANT", job["tenant"]),
                ("PRIORITY", job["priority"]),
                ("KIND", job["kind"]),
                ("STATE", state),
                ("WHY", condition_line(job.get("condition"))),
                ("PREEMPTIBLE", "yes" if job["preemptible"] else "no"),
                ("GPUS", _gpus_wanted(res)),
                ("IMAGE", spec["workload"]["image"]),
                ("DURATION", f"{spec['estimated_duration_s']}s (estimated)"),
                ("CREATED", when(job["created_at"])),
                ("UPDATED", when(job["updated_at"])),
            ]
        )
    ]
    p = job.get("placement")
    blocks.append(
        "PLACEMENT\n"
        + (
            "(not placed)"
            if p is None
            else table(
                ["SITE", "POOL", "GPUS", "EST. COST", "EST. gCO2", "STARTED", "ENDED"],
                [
                    [
                        p["site"],
                        p["pool_id"],
                        num(p["gpus"], digits=3),
                        f"${p['estimated_cost_usd']:.2f}",
                        num(p["estimated_gco2"]),
                        when(p["started_at"]),
                        when(p["ended_at"]),
                    ]
                ],
                right=frozenset({2, 3, 4}),
            )
        )
    )
    blocks.append("EVENTS\n" + event_table(job.get("events") or []))
    return "\n\n".join(blocks)


def _gpus_wanted(res: Json) -> str:
    models = " | ".join(res["gpu_models"]) or "any model"
    if res.get("mig_profile"):
        share = f"MIG {res['mig_profile']}"
    elif res.get("gpu_fraction"):
        share = f"{num(res['gpu_fraction'], digits=3)} of a GPU"
    else:
        share = f"{res['gpus']}"
    nodes = f" x {res['nodes']} nodes" if res.get("nodes", 1) != 1 else ""
    return f"{share} x {models}{nodes}"


def event_table(events: Sequence[Json]) -> str:
    return table(["TIME", "TRANSITION", "REASON", "DETAIL"], [event_cells(e) for e in events])


def event_cells(event: Json) -> list[str]:
    return [
        when(event["at"]),
        f"{event['from_state'] or NONE} -> {event['to_state']}",
        event["reason"],
        event["detail"],
    ]


def event_line(event: Json) -> str:
    """One event as `watch` prints it when it appears."""
    return GAP.join(_cell(c) for c in event_cells(event)).rstrip()


def inventory(rows: Sequence[Json]) -> str:
    return table(
        ["SITE", "GPU", "MEM", "TOTAL", "ALLOC", "FREE", "$/GPU-H", "gCO2/kWh", "HEALTH"],
        [
            [
                r["site"],
                r["gpu_model"],
                f"{num(r['gpu_memory_gb'])}G",
                num(r["total_gpus"], digits=3),
                num(r["allocated_gpus"], digits=3),
                num(r["free_gpus"], digits=3),
                f"{r['price_on_demand']:.2f}",
                num(r["carbon_intensity_gco2_per_kwh"], digits=0),
                r["health"],
            ]
            for r in rows
        ],
        right=frozenset({2, 3, 4, 5, 6, 7}),
    )


def sites(rows: Sequence[Json]) -> str:
    return table(
        ["NAME", "KIND", "REGION", "LOCATION", "GRID ZONE", "PRIVATE", "PUE", "HEALTH"],
        [
            [
                s["name"],
                s["kind"],
                s["region"],
                s["location"],
                s["grid_zone"],
                "yes" if s["private"] else "no",
                num(s["pue"]),
                s["health"] + (f" ({s['health_reason']})" if s["health_reason"] else ""),
            ]
            for s in rows
        ],
        right=frozenset({6}),
    )


def explanation(ev: Json) -> str:
    winner = ev.get("winner")
    head = (
        "no pool can take this job now"
        if winner is None
        else f"winner: {winner['site']} ({winner['pool_id']}), score {winner['score']:.4f}"
    )
    w = ev["weights"]
    blocks = [f"{head}\nweights: cost {w['cost']}, latency {w['latency']}, carbon {w['carbon']}"]
    if ev["candidates"]:
        blocks.append(
            "CANDIDATES\n"
            + table(
                ["RANK", "SITE", "POOL", "GPUS", "COST", "$/H", "LATENCY", "gCO2", "SCORE"],
                [
                    [
                        c["rank"],
                        c["site"],
                        c["pool_id"],
                        num(c["gpus"], digits=3),
                        f"${c['cost_usd']:.2f}",
                        f"{c['hourly_cost_usd']:.2f}",
                        NONE if c["latency_ms"] is None else f"{num(c['latency_ms'], digits=1)}ms",
                        num(c["gco2"]),
                        f"{c['score']:.4f}",
                    ]
                    for c in ev["candidates"]
                ],
                right=frozenset({0, 3, 4, 5, 6, 7, 8}),
            )
        )
    if ev["rejected"]:
        blocks.append(
            "REJECTED\n"
            + table(
                ["SITE", "POOL", "REASON", "DETAIL"],
                [[r["site"], r["pool_id"], r["reason"], r["detail"]] for r in ev["rejected"]],
            )
        )
    return "\n\n".join(blocks)


def sustainability(report: Json) -> str:
    """One row per group and a total, then the period and how the numbers were made."""
    cols = ("runs", "energy_kwh", "kgco2e", "avoided_kgco2e", "added_kgco2e", "cost_usd")
    rows = [
        [g["key"], *(g[c] if c == "runs" else num(g[c], digits=3) for c in cols)]
        for g in report["groups"]
    ]
    rows.append(["total", *(report["total"][c] for c in cols[:1])])
    rows[-1] += [num(report["total"][c], digits=3) for c in cols[1:]]
    head = [
        report["group_by"].upper(),
        "RUNS",
        "KWH",
        "KGCO2E",
        "AVOIDED",
        "ADDED",
        "COST USD",
    ]
    return (
        f"{report['from']} to {report['to']}\n"
        + table(head, rows, right=frozenset(range(1, 7)))
        + f"\n\n{report['method']}"
    )


def job_explanation(data: Json) -> str:
    """`GET /v1/jobs/{id}/explain`: what a pass now would do with the job, and why."""
    outcome = data["outcome"]
    if outcome == "place":
        verdict = f"place on {data['site']} ({data['pool_id']})"
    elif outcome == "defer":
        verdict = f"defer until {when(data['deferred_until'])} on {data['site']}"
    else:
        verdict = f"wait: {data['reason']}"
    st = data["standing"]
    rows: list[tuple[str, object]] = [
        ("JOB", data["job_id"]),
        ("STATE", data["state"]),
        ("NOW", verdict),
        ("WHY", data["message"]),
        (
            "QUEUE",
            f"{st['position']} of {st['queue_length']} "
            f"({st['ahead_same_tier']} of its tier ahead; tenant share {st['tenant_share']:.1%})",
        ),
        ("DEFERRAL", data["deferral"]),
        ("PREEMPTION", data["preemption"]),
    ]
    q = data.get("quota")
    if q is None:
        rows.append(("QUOTA", "no quotas configured"))
    else:
        cap = NONE if q["cap"] is None else num(q["cap"])
        rows.append(("QUOTA", f"used {num(q['used'])}, nominal {num(q['nominal'])}, cap {cap}"))
        if q.get("free") is not None:
            rows.append(
                ("CAPACITY", f"free {num(q['free'])}, reserved for others {num(q['reserved'])}")
            )
        rows.append(("QUOTA CHECK", q["reason"]))
    blocks = [fields(rows)]
    if data["victims"]:
        blocks.append(
            "WOULD PREEMPT\n"
            + table(
                ["JOB", "TENANT", "TIER", "GPUS", "GPU-S LOST", "BORROWED"],
                [
                    [
                        v["job_id"] or "(another tenant's)",
                        v["tenant"] or NONE,
                        v["tier"],
                        num(v["gpus"], digits=3),
                        num(v["gpu_seconds_lost"]),
                        "yes" if v["borrowed"] else "no",
                    ]
                    for v in data["victims"]
                ],
                right=frozenset({3, 4}),
            )
        )
    return "\n\n".join(blocks)
