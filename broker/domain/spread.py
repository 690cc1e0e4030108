"""Where a service's replicas go and which ones leave: the spread rule, then carbon.

The spread rule: losing any one site must leave at least `critical_share` of the replicas
serving, so one site may hold at most ``total − ceil(critical_share × total)`` of them
(`max_per_site`), and never less than one (a single replica has to live somewhere). When
the sites on offer cannot meet the rule (two sites for three replicas at a share of 0.5),
it relaxes to the best spread those sites allow, ``ceil(total / sites)`` a site: the
fullest site is then as small as it can be (`site_cap`). Should even that not fit the free
slots, a replica still goes where there is room, over the limit, and its reason says so:
serving the load comes before spreading it.

Carbon decides within the rule. Additions go to the cleanest site first (lowest grid
intensity; an unknown intensity goes after every known one), ties to the better engine
score (lower is better, as in `broker.domain.ranking`), then to the site name. Removals
take replicas that are not ready first (they serve nothing), then the dirtiest site's
(unknown intensity first, the mirror of additions), newest first within a site, except
where that would break the rule for the count left, when they come from the sites over it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "ReplicaView",
    "SiteOption",
    "choose_additions",
    "choose_removals",
    "max_per_site",
    "site_cap",
]

_EPS = 1e-9  # ceil(0.7 × 10) must be 7, not 8 from a rounding error


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteOption:
    """A site the SLO allows, with its grid intensity, engine score and free replica slots."""

    site: str
    intensity_gco2_per_kwh: float | None  # None: unknown
    score: float  # the engine's, lower is better
    feasible_slots: int  # how many more replicas fit there now


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaView:
    """A running (or starting) replica as the removal choice sees it."""

    id: str
    site: str
    intensity_gco2_per_kwh: float | None
    ready: bool
    started_at: datetime


def max_per_site(total: int, *, critical_share: float) -> int:
    """The most of `total` replicas one site may hold so that losing it leaves at least
    `critical_share` of them serving; at least 1 (so 1 for a single replica)."""
    _check_share(critical_share)
    if total < 0:
        raise ValueError(f"total must be ≥ 0, got {total}")
    if total == 0:
        return 0
    keep = math.ceil(critical_share * total - _EPS)
    return max(1, total - keep)


def site_cap(total: int, *, sites: int, critical_share: float) -> int:
    """`max_per_site`, relaxed to the even spread ``ceil(total / sites)`` when `sites` are
    too few to meet it."""
    cap = max_per_site(total, critical_share=critical_share)
    return max(cap, math.ceil(total / sites)) if sites > 0 else cap


def choose_additions(
    *,
    count: int,
    candidates: Sequence[SiteOption],
    existing: Mapping[str, int],
    critical_share: float,
) -> list[tuple[str, str]]:
    """Sites for `count` new replicas, one (site, reason) each, cleanest first within the
    spread rule; fewer when the candidates run out of slots."""
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    if len({c.site for c in candidates}) != len(candidates):
        raise ValueError("each candidate site must appear once")
    order = sorted(candidates, key=_clean_first)
    slots = {c.site: max(0, c.feasible_slots) for c in candidates}
    counts = Counter({site: n for site, n in existing.items() if n > 0})
    usable = set(counts) | {site for site, n in slots.items() if n > 0}
    total = sum(counts.values()) + count
    cap = site_cap(total, sites=len(usable), critical_share=critical_share)
    picks: list[tuple[str, str]] = []
    for _ in range(count):
        room = [c for c in order if slots[c.site] > 0]
        if not room:
            break
        within = [c for c in room if counts[c.site] < cap]
        pick = (within or room)[0]
        why = _addition_reason(pick, rest=(within or room)[1:])
        held = [c.site for c in order[: order.index(pick)] if c in room and c not in within]
        if held:
            why += f"; {', '.join(held)} at the spread limit of {cap} a site"
        if not within:
            why += f"; over the spread limit of {cap}: no site under it has room"
        picks.append((pick.site, why))
        slots[pick.site] -= 1
        counts[pick.site] += 1
    return picks


def choose_removals(
    *, count: int, replicas: Sequence[ReplicaView], critical_share: float
) -> list[tuple[str, str]]:
    """`count` replicas to remove, one (replica id, reason) each, in removal order."""
    if count < 0:
        raise ValueError(f"count must be ≥ 0, got {count}")
    count = min(count, len(replicas))
    remaining = list(replicas)
    counts = Counter(r.site for r in replicas)
    cap = site_cap(len(replicas) - count, sites=len(counts), critical_share=critical_share)
    picks: list[tuple[str, str]] = []
    for step in range(count):
        over = {site for site, n in counts.items() if n > cap}
        need = sum(counts[site] - cap for site in over)
        forced = count - step <= need  # every removal left must bring a site down to the cap
        pool = [r for r in remaining if r.site in over] if forced else remaining
        pick = min(pool, key=_removal_order)
        picks.append((pick.id, _removal_reason(pick, remaining=remaining, forced=forced, cap=cap)))
        remaining.remove(pick)
        counts[pick.site] -= 1
    return picks


def _check_share(share: float) -> None:
    if not 0 <= share <= 1:
        raise ValueError(f"critical_share must be in [0, 1], got {share}")


def _clean_first(c: SiteOption) -> tuple[bool, float, float, str]:
    i = c.intensity_gco2_per_kwh
    return (i is None, 0.0 if i is None else i, c.score, c.site)


def _removal_order(r: ReplicaView) -> tuple[bool, bool, float, float, str]:
    i = r.intensity_gco2_per_kwh
    return (r.ready, i is not None, -(i or 0.0), -r.started_at.timestamp(), r.id)


def _g(i: float | None) -> str:
    return "unknown" if i is None else f"{i:.0f}"


def _addition_reason(pick: SiteOption, *, rest: Sequence[SiteOption]) -> str:
    """Why `pick` beat the next site that could have taken the replica."""
    mine = pick.intensity_gco2_per_kwh
    if not rest:
        return f"{pick.site}: {_g(mine)} gCO2/kWh, the only site that can take it"
    nxt = rest[0]
    theirs = nxt.intensity_gco2_per_kwh
    if mine is None:
        return f"{pick.site}: intensity unknown, as at {nxt.site}; engine score {pick.score:.3g}"
    if theirs is None or mine < theirs:
        return f"cleaner: {_g(mine)} vs {_g(theirs)} gCO2/kWh at {nxt.site}"
    if pick.score < nxt.score:
        return (
            f"as clean as {nxt.site} ({_g(mine)} gCO2/kWh); better engine score"
            f" {pick.score:.3g} vs {nxt.score:.3g}"
        )
    return f"as clean as {nxt.site} ({_g(mine)} gCO2/kWh), same engine score: by name"


def _removal_reason(
    pick: ReplicaView, *, remaining: Sequence[ReplicaView], forced: bool, cap: int
) -> str:
    """Why `pick` goes before the others still running."""
    mine = pick.intensity_gco2_per_kwh
    known = [
        r.intensity_gco2_per_kwh
        for r in remaining
        if r.site != pick.site and r.intensity_gco2_per_kwh is not None
    ]
    if not pick.ready:
        why = f"not ready (at {pick.site})"
    elif mine is None:
        why = f"{pick.site}: intensity unknown, removed before known ones; newest there"
    elif known and mine >= max(known):
        cleanest = min(
            (r for r in remaining if r.site != pick.site and r.intensity_gco2_per_kwh in known),
            key=lambda r: (r.intensity_gco2_per_kwh or 0.0, r.site),
        )
        why = (
            f"dirtiest: {_g(mine)} vs {_g(cleanest.intensity_gco2_per_kwh)} gCO2/kWh"
            f" at {cleanest.site}; newest at {pick.site}"
        )
    else:
        why = f"{pick.site}: {_g(mine)} gCO2/kWh; newest there"
    if forced:
        why += f"; {pick.site} is over the spread limit of {cap} a site"
    return why
