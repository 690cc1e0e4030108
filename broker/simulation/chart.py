"""A self-contained HTML page with SVG charts of a replay (no JavaScript, no downloads)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

COLOURS = {"broker": "#1a7f37", "fifo": "#cf222e", "lower_bound": "#6e7781"}
W, H, PAD = 860, 240, 48


def _line_chart(
    title: str,
    unit: str,
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    *,
    y_max: float | None = None,
) -> str:
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<h3>{html.escape(title)}</h3><p>no data</p>"
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    span = max(1.0, t1 - t0)
    top = y_max if y_max is not None else max(1e-9, max(v for _, v in points)) * 1.05

    def xy(t: datetime, v: float) -> str:
        x = PAD + (t.timestamp() - t0) / span * (W - 2 * PAD)
        y = H - PAD + 10 - v / top * (H - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<line x1="{PAD}" y1="{H - PAD + 10}" x2="{W - PAD}" y2="{H - PAD + 10}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD - 10}" x2="{PAD}" y2="{H - PAD + 10}" stroke="#999"/>',
        f'<text x="{PAD - 6}" y="{PAD - 6}" text-anchor="end" font-size="11">{top:.3g}</text>',
        f'<text x="{PAD - 6}" y="{H - PAD + 10}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{W - PAD}" y="{H - 8}" text-anchor="end" font-size="11">'
        f"{(t1 - t0) / 3600:.0f} h after the trace starts</text>",
    ]
    for i, (name, s) in enumerate(series.items()):
        colour = COLOURS.get(name, "#0969da")
        pts = " ".join(xy(t, v) for t, v in _downsample(s))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        parts.append(
            f'<text x="{W - PAD - 150}" y="{PAD + 14 * i}" font-size="12" '
            f'fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)} ({html.escape(unit)})</h3>" + "".join(parts)


def _downsample(
    s: Sequence[tuple[datetime, float]], limit: int = 600
) -> Sequence[tuple[datetime, float]]:
    if len(s) <= limit:
        return s
    step = len(s) / limit
    return [s[int(i * step)] for i in range(limit)] + [s[-1]]


def _burst_table(summary: Mapping[str, Any]) -> str:
    """The broker without and with bursting, when the replay burst."""
    comparison = summary.get("burst", {}).get("comparison")
    if not comparison:
        return ""

    def cells(f: Mapping[str, Any]) -> list[str]:
        waits = [f["wait_s"][t][q] for t in ("P1", "P2") for q in ("mean", "p95", "p99")]
        return [
            f"{f['cloud_spend_usd']:,.0f}",
            f"{f['idle_spend_usd']:,.0f}",
            str(f["instances_started"]),
            f"{f['kgco2e']:,.1f}",
            str(f["deadline_misses"]),
        ] + ["-" if w is None else f"{w:,.0f}" for w in waits]

    names = ["cloud spend USD", "idle spend USD", "instances started", "kgCO2e (jobs)"]
    names += ["deadline misses"]
    names += [f"{t} wait {q} s" for t in ("P1", "P2") for q in ("mean", "p95", "p99")]
    rows = zip(names, cells(comparison["without"]), cells(comparison["with"]), strict=True)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{a}</td><td>{b}</td></tr>" for name, a, b in rows
    )
    return (
        "<h2>Bursting</h2><table><tr><th></th><th>broker, no burst</th>"
        f"<th>broker, burst</th></tr>{body}</table>"
    )


def _first_wait(first: Mapping[str, Any]) -> str:
    """`5.2 h at 57.5 %`: when a job first waited, and the share of GPUs then allocated."""
    return f"{first['at_s'] / 3600:,.1f} h at {first['allocated_share']:.1%}"


def render(
    *,
    summary: Mapping[str, Any],
    allocation: Mapping[str, Sequence[tuple[datetime, float]]],
    emissions: Mapping[str, Sequence[tuple[datetime, float]]],
) -> str:
    rows = []
    for name, s in summary["policies"].items():
        p99 = s["wait_s"]["P1"]["p99"]
        waiting = s.get("allocation_while_waiting")
        share = "-" if waiting is None else f"{waiting['overall']:.1%}"
        first = s.get("first_wait")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{s['kgco2e']:,.1f}</td><td>{s['cost_usd']:,.0f}</td>"
            f"<td>{s['energy_kwh']:,.0f}</td><td>{s['allocation_ratio_mean']:.1%}</td>"
            f"<td>{share}</td>"
            f"<td>{'-' if first is None else _first_wait(first)}</td>"
            f"<td>{'-' if p99 is None else f'{p99:,.0f}'}</td><td>{s['deadline_misses']}</td>"
            f"<td>{s['preemptions']}</td><td>{s['deferred_jobs']}</td></tr>"
        )
    lb = summary["lower_bound"]["kgco2e"]
    over = summary["lower_bound"].get("over_capacity_share", 0.0)
    table = (
        "<table><tr><th>policy</th><th>kgCO2e</th><th>cost USD</th><th>energy kWh</th>"
        "<th>GPU allocation</th><th>allocation while jobs wait</th><th>first wait</th>"
        "<th>P1 wait p99 s</th><th>deadline misses</th>"
        "<th>preemptions</th><th>deferred</th></tr>"
        + "".join(rows)
        + f"<tr><td>offline lower bound</td><td>{lb:,.1f}</td><td colspan=9>each job alone at its "
        f"cleanest feasible site and window, capacity ignored ({over:.0%} of it in pools "
        "its own schedule overfills)</td></tr></table>"
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Trace replay: {html.escape(summary["trace"])}</title>
<style>body{{font:14px/1.5 system-ui,sans-serif;max-width:920px;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:.25rem .5rem;
text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>Trace replay</h1>
<p>Trace <code>{html.escape(summary["trace"])}</code> on fleet
<code>{html.escape(summary["fleet"])}</code>, carbon <code>{html.escape(summary["carbon"])}</code>.
{summary["jobs"]} jobs.</p>
{table}
{_burst_table(summary)}
{_line_chart("GPU allocation", "GPUs in use", allocation)}
{_line_chart("Emissions", "kgCO2e per hour", emissions)}
<details><summary>Summary JSON</summary><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
</details></body></html>
"""
