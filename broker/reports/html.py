"""The sustainability report as one self-contained HTML page: inline SVG, no scripts, no
downloads, so it can be mailed or archived as it is."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from broker.reports.sustainability import METHOD, Report

PALETTE = ("#1a7f37", "#0969da", "#8250df", "#bf3989", "#bc4c00", "#4d2d00", "#6e7781", "#116329")
W, PAD = 860, 56


def _esc(text: object) -> str:
    return html.escape(str(text))


def _daily_by_site(report: Report) -> tuple[list[date], dict[str, dict[date, float]]]:
    """kgCO2e per day (of the run's end) and site."""
    by_site: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for r in report.runs:
        if r.gco2 is not None:
            by_site[r.site][r.ended_at.date()] += r.gco2 / 1000
    days = sorted({d for per_day in by_site.values() for d in per_day})
    return days, by_site


def emissions_chart(report: Report) -> str:
    days, by_site = _daily_by_site(report)
    if not days:
        return "<p>No emissions in this period.</p>"
    sites = sorted(by_site)
    tops = [sum(by_site[s].get(d, 0.0) for s in sites) for d in days]
    top = max(max(tops), 1e-9)
    h = 260
    bar = (W - 2 * PAD) / len(days)
    parts = [
        f'<svg viewBox="0 0 {W} {h + 40}" width="{W}" role="img" '
        'aria-label="Emissions per day by site">',
        f'<text x="{PAD - 6}" y="{PAD - 16}" text-anchor="end" font-size="11">{top:.3g} kg</text>',
    ]
    for i, d in enumerate(days):
        y = float(h - 20)
        for j, s in enumerate(sites):
            v = by_site[s].get(d, 0.0)
            hh = v / top * (h - PAD - 20)
            y -= hh
            parts.append(
                f'<rect x="{PAD + i * bar + 1:.1f}" y="{y:.1f}" width="{max(1.0, bar - 2):.1f}" '
                f'height="{hh:.1f}" fill="{PALETTE[j % len(PALETTE)]}">'
                f"<title>{_esc(s)} {d}: {v:.3f} kgCO2e</title></rect>"
            )
        if len(days) <= 31 or i % max(1, len(days) // 15) == 0:
            parts.append(
                f'<text x="{PAD + (i + 0.5) * bar:.1f}" y="{h - 6}" font-size="10" '
                f'text-anchor="middle">{d.strftime("%m-%d")}</text>'
            )
    for j, s in enumerate(sites):
        parts.append(
            f'<rect x="{PAD + j * 140}" y="{h + 12}" width="10" height="10" '
            f'fill="{PALETTE[j % len(PALETTE)]}"/><text x="{PAD + j * 140 + 14}" y="{h + 21}" '
            f'font-size="11">{_esc(s)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def avoided_chart(report: Report) -> str:
    groups = report.groups
    if not groups:
        return "<p>No runs in this period.</p>"
    rows = [
        (k, t.kgco2e, t.avoided_kgco2e, t.added_kgco2e)
        for k, t in groups.items()
        if t.kgco2e or t.avoided_kgco2e
    ]
    if not rows:
        return "<p>No measured emissions in this period.</p>"
    top = max(max(a + b, a + c) for _, a, b, c in rows) or 1e-9
    row_h, label_w = 26, 160
    h = row_h * len(rows) + 40
    parts = [
        f'<svg viewBox="0 0 {W} {h}" width="{W}" role="img" '
        'aria-label="Actual and avoided emissions by group">'
    ]
    scale = (W - label_w - PAD) / top
    for i, (k, actual, avoided, added) in enumerate(rows):
        y = 10 + i * row_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end" font-size="11">'
            f"{_esc(k)}</text>"
            f'<rect x="{label_w}" y="{y}" width="{actual * scale:.1f}" height="18" fill="#6e7781">'
            f"<title>actual {actual:.3f} kgCO2e</title></rect>"
            f'<rect x="{label_w + actual * scale:.1f}" y="{y}" width="{avoided * scale:.1f}" '
            f'height="18" fill="#1a7f37"><title>avoided {avoided:.3f} kgCO2e</title></rect>'
        )
        if added:
            parts.append(
                f'<rect x="{label_w}" y="{y + 18}" width="{added * scale:.1f}" height="4" '
                f'fill="#cf222e"><title>added {added:.3f} kgCO2e</title></rect>'
            )
    parts.append(
        f'<text x="{label_w}" y="{h - 8}" font-size="11">grey: emitted; green: avoided against '
        "the carbon-blind choice; red: added</text></svg>"
    )
    return "".join(parts)


def heat_map(report: Report) -> str:
    """Energy-weighted mean intensity the work ran at, by day and hour of day (UTC)."""
    weight: dict[tuple[date, int], float] = defaultdict(float)
    total: dict[tuple[date, int], float] = defaultdict(float)
    for r in report.runs:
        seconds = (r.ended_at - r.started_at).total_seconds()
        if r.intensity_gco2_per_kwh is None or seconds <= 0:
            continue
        kw = r.energy_kwh / (seconds / 3600)
        t = r.started_at.replace(minute=0, second=0, microsecond=0)
        while t < r.ended_at:
            first, last = max(t, r.started_at), min(t + timedelta(hours=1), r.ended_at)
            kwh = kw * (last - first).total_seconds() / 3600
            weight[(t.date(), t.hour)] += kwh
            total[(t.date(), t.hour)] += kwh * r.intensity_gco2_per_kwh
            t += timedelta(hours=1)
    cells = {k: total[k] / w for k, w in weight.items() if w > 0}
    if not cells:
        return "<p>No measured intensity in this period.</p>"
    days = sorted({d for d, _ in cells})[-62:]  # at most two months of rows
    lo, hi = min(cells.values()), max(cells.values())
    cell_w, cell_h = (W - 2 * PAD) / 24, 14
    h = cell_h * len(days) + 40
    parts = [
        f'<svg viewBox="0 0 {W} {h}" width="{W}" role="img" aria-label="Intensity by day and hour">'
    ]
    for j in range(0, 24, 3):
        parts.append(f'<text x="{PAD + j * cell_w:.1f}" y="12" font-size="10">{j:02d}h</text>')
    for i, d in enumerate(days):
        y = 18 + i * cell_h
        parts.append(f'<text x="{PAD - 4}" y="{y + 11}" text-anchor="end" font-size="9">{d}</text>')
        for hour in range(24):
            v = cells.get((d, hour))
            if v is None:
                continue
            share = 0.0 if hi == lo else (v - lo) / (hi - lo)
            colour = f"rgb({int(40 + 200 * share)},{int(160 - 110 * share)},{int(70 - 30 * share)})"
            parts.append(
                f'<rect x="{PAD + hour * cell_w:.1f}" y="{y}" width="{cell_w - 1:.1f}" '
                f'height="{cell_h - 1}" fill="{colour}"><title>{d} {hour:02d}:00 UTC: '
                f"{v:.0f} gCO2e/kWh</title></rect>"
            )
    parts.append(
        f'<text x="{PAD}" y="{h - 6}" font-size="11">green {lo:.0f} → red {hi:.0f} '
        "gCO2e/kWh</text></svg>"
    )
    return "".join(parts)


def capacity_section(capacity: Mapping[str, Any] | None) -> str:
    """Cloud burst capacity of the period: beside the runs, never added to them."""
    if capacity is None:
        return ""
    rows = "".join(
        f"<tr><td>{_esc(site)}</td><td>{v['instance_hours']:.2f}</td>"
        f"<td>{v['cost_usd']:.2f}</td><td>{v['kgco2e']:.3f}</td></tr>"
        for site, v in capacity["by_provider"].items()
    )
    return (
        "<h2>Burst cloud capacity</h2>"
        f"<p>{capacity['bursts']} bursts ({capacity['failed_bursts']} failed), "
        f"{capacity['reclaims']} reclaims, {capacity['instances']} instances, "
        f"${capacity['cost_usd']:.2f}, at most {capacity['kgco2e']:.3f} kgCO2e (whole "
        "instances, idle time included; it overlaps the runs above, so it is not added to "
        "them)</p><table><tr><th>provider site</th><th>instance-hours</th><th>cost USD</th>"
        f"<th>kgCO2e (bound)</th></tr>{rows}</table>"
    )


def to_html(
    report: Report, *, generated_at: datetime, capacity: Mapping[str, Any] | None = None
) -> str:
    t = report.total.as_dict()
    rows = "".join(
        "<tr>"
        + f"<td>{_esc(k)}</td>"
        + "".join(
            f"<td>{'' if v is None else _esc(v)}</td>"
            for v in (
                g.runs,
                f"{g.energy_kwh:.3f}",
                f"{g.kgco2e:.3f}",
                f"{g.avoided_kgco2e:.3f}",
                f"{g.added_kgco2e:.3f}",
                f"{g.cost_usd:.2f}",
                f"{g.gpu_hours:.2f}",
                None if g.intensity_gco2_per_kwh is None else f"{g.intensity_gco2_per_kwh:.0f}",
            )
        )
        + "</tr>"
        for k, g in report.groups.items()
    )
    headline = (
        f"{t['runs']} runs, {t['energy_kwh']:.3f} kWh, {t['kgco2e']:.3f} kgCO2e emitted, "
        f"{t['avoided_kgco2e']:.3f} kgCO2e avoided, {t['added_kgco2e']:.3f} kgCO2e added, "
        f"${t['cost_usd']:.2f}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sustainability report</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:{W + 40}px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.method{{color:#57606a;font-size:12px}}</style>
</head><body>
<h1>Sustainability report</h1>
<p>{_esc(report.start.isoformat())} to {_esc(report.end.isoformat())}, by {report.group_by.value};
generated {_esc(generated_at.isoformat())}</p>
<p>Carbon accounting basis: <strong>{_esc(report.basis)}</strong> (grid intensities of one basis
throughout; see Method)</p>
<p><strong>{_esc(headline)}</strong></p>
<h2>Emissions per day, by site</h2>{emissions_chart(report)}
<h2>Emitted and avoided, by {report.group_by.value}</h2>{avoided_chart(report)}
<h2>Grid intensity the work ran at (UTC hour of day)</h2>{heat_map(report)}
<h2>By {report.group_by.value}</h2>
<table><tr><th>{report.group_by.value}</th><th>runs</th><th>kWh</th><th>kgCO2e</th>
<th>avoided kgCO2e</th><th>added kgCO2e</th><th>cost USD</th><th>GPU-hours</th>
<th>gCO2e/kWh</th></tr>{rows}</table>
{capacity_section(capacity)}
<h2>Method</h2><p class="method">{_esc(METHOD)}</p>
</body></html>
"""
