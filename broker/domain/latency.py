"""Measured round-trip times between locations (`cloud:region` keys).

Measurements are one-shot and asymmetric (see the latency data's README); the robust
estimate of a pair is the smaller of its two directions, which is what `rtt` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class LatencyMatrix:
    def __init__(self, pairs: Mapping[tuple[str, str], float]) -> None:
        self._pairs = dict(pairs)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, float]]) -> LatencyMatrix:
        pairs: dict[tuple[str, str], float] = {}
        for src, dst, ms in rows:
            key = (src, dst)
            pairs[key] = min(ms, pairs.get(key, ms))
        return cls(pairs)

    def rtt(self, src: str, dst: str) -> float | None:
        """Round trip in ms, 0 within one location, None when never measured."""
        if src == dst:
            return 0.0
        known = [
            v for v in (self._pairs.get((src, dst)), self._pairs.get((dst, src))) if v is not None
        ]
        return min(known) if known else None

    def locations(self) -> frozenset[str]:
        return frozenset(k for pair in self._pairs for k in pair)

    def __len__(self) -> int:
        return len(self._pairs)
