"""The rule table over one pass's pools: which pools each rule admits, as masks.

`rules.RULES` is written for one pool at a time; a scheduling pass asks it about
thousands of jobs and pools, but the jobs have few distinct needs. So `RuleMasks` turns a
rule and a need into a mask over all pools once, and caches it:

- every pool's offer to a rule is gathered once per pass, per site for the rules that read
  the site only (`_column`);
- an `elementwise` rule's `admits` is called once, with the column as a numpy array;
- any other rule's `admits` is called once per distinct offer (a handful of GPU models,
  MIG profile lists, sites), and the verdicts are spread over the pools;
- a combination of needs (one per rule; None where a rule does not apply) becomes the
  pools' positions once (`admitted`).

The latency rules read the round trip from the job's origin, which differs per origin;
`within_reach` applies them to the shorter list the other rules leave.

`first_failures` answers why a job waits from the same masks: which rules are the first
one some pool fails, as `placement.evaluate` names them pool by pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from broker.domain.fleet import GpuPool, Site
from broker.domain.ranking import Bools, Floats, Ints
from broker.domain.rules import RULES, FromPool, FromRoute, FromSite, RejectReason, Rule

STATIC = [i for i, r in enumerate(RULES) if not isinstance(r.offer, FromRoute)]
ROUTE = [i for i, r in enumerate(RULES) if isinstance(r.offer, FromRoute)]

Needs = tuple[object, ...]  # one per rule of RULES, in order; None where it does not apply


@dataclass(frozen=True, slots=True)
class _Column:
    """Every pool's offer to one rule: as an array (an elementwise rule; a tuple offer
    gives one row per member), or as positions into its distinct offers."""

    values: Any
    distinct: list[Any]
    inverse: Ints


class RuleMasks:
    def __init__(
        self,
        *,
        pools: Sequence[GpuPool],
        sites: Sequence[Site],
        site_of: Ints,
        rules: tuple[Rule[Any, Any], ...] = RULES,
    ) -> None:
        """`site_of`: each pool's position in `sites`. What the rules read of a pool does
        not change in a pass, so the pools as the pass starts will do. `rules`: a
        `rules.rule_table` (all have the layout of `RULES`)."""
        self._table = rules
        self._pools = list(pools)
        self._sites = list(sites)
        self._site_of = site_of
        self._columns: dict[int, _Column] = {}
        self._masks: dict[tuple[int, object], Bools | None] = {}
        self._admitted: dict[Needs, Ints] = {}

    def admitted(self, needs: Needs) -> Ints:
        """Positions of the pools every rule but the latency ones admits."""
        static = tuple(needs[i] for i in STATIC)
        got = self._admitted.get(static)
        if got is None:
            mask: Bools | None = None
            if self._pools:
                for pos, need in zip(STATIC, static, strict=True):
                    if need is None:
                        continue
                    admits = self._mask(pos, need)
                    if admits is not None:
                        mask = admits if mask is None else mask & admits
            if mask is None:
                got = np.arange(len(self._pools), dtype=np.int64)
            else:
                got = np.flatnonzero(mask).astype(np.int64)
            self._admitted[static] = got
        return got

    def within_reach(self, needs: Needs, latency: Floats | None, size: int) -> Bools | None:
        """Which of `size` pools the latency rules admit, given their round trips from the
        job's origin (None: the job has none, so every one is unknown); None: all."""
        route = [(self._table[i], needs[i]) for i in ROUTE if needs[i] is not None]
        if not route:
            return None
        ms = np.full(size, np.nan) if latency is None else latency
        keep = np.ones(size, dtype=bool)
        with np.errstate(invalid="ignore"):
            for rule, need in route:
                keep &= np.asarray(rule.admits(ms, need), dtype=bool)
        return keep

    def first_failures(self, needs: Needs, latency: Floats) -> set[RejectReason]:
        """The rules that are the first rule some pool fails, in the table's order (what
        `placement.evaluate` names each rejected pool by); `latency`: every pool's round
        trip from the job's origin, NaN when unknown or the job has none."""
        out: set[RejectReason] = set()
        alive = np.ones(len(self._pools), dtype=bool)  # the pools every rule so far admits
        for pos, (rule, need) in enumerate(zip(self._table, needs, strict=True)):
            if need is None:
                continue
            if isinstance(rule.offer, FromRoute):
                with np.errstate(invalid="ignore"):
                    admits: Bools | None = np.asarray(rule.admits(latency, need), dtype=bool)
            else:
                admits = self._mask(pos, need)
            if admits is None:
                continue
            if (alive & ~admits).any():
                out.add(rule.reason)
                alive &= admits
        return out

    def _mask(self, pos: int, need: object) -> Bools | None:
        """Which pools rule `pos` admits for `need`; None when it admits them all."""
        key = (pos, need)
        if key in self._masks:
            return self._masks[key]
        rule = self._table[pos]
        column = self._column(pos)
        if rule.elementwise:
            with np.errstate(invalid="ignore"):
                mask = np.asarray(rule.admits(column.values, need), dtype=bool)
        else:
            verdicts = np.fromiter(
                (rule.admits(offer, need) for offer in column.distinct),
                dtype=bool,
                count=len(column.distinct),
            )
            mask = verdicts[column.inverse]
        out = self._masks[key] = None if mask.all() else mask
        return out

    def _column(self, pos: int) -> _Column:
        got = self._columns.get(pos)
        if got is None:
            rule = self._table[pos]
            offer = rule.offer
            if isinstance(offer, FromPool):
                offers = [offer.get(p) for p in self._pools]
                spread = None
            elif isinstance(offer, FromSite):  # once per site, spread over its pools
                offers = [offer.get(s) for s in self._sites]
                spread = self._site_of
            else:
                raise TypeError(f"{rule.reason}: a latency rule has no column")
            if rule.elementwise:
                values = np.asarray(offers)
                if values.ndim == 2:  # tuple offers: one row per member
                    values = values.T
                got = _Column(
                    values=values if spread is None else values[..., spread],
                    distinct=[],
                    inverse=np.zeros(0, dtype=np.int64),
                )
            else:
                first: dict[object, int] = {}
                inverse = np.asarray(
                    [first.setdefault(o, len(first)) for o in offers], dtype=np.int64
                )
                got = _Column(
                    values=None,
                    distinct=list(first),
                    inverse=inverse if spread is None else inverse[spread],
                )
            self._columns[pos] = got
        return got
