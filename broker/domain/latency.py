"""Measured round-trip times between locations (`cloud:region` keys).

Measurements are one-shot and asymmetric (see the latency data's README); the robust
estimate of a pair is the smaller of its two directions, which is what `rtt` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

MIX = "mix:"  # a mixed origin: "mix:aws:us-east-1=0.7,gcp:europe-west4=0.3"


def mixed_origin(parts: Sequence[tuple[str, float]]) -> str | None:
    """One origin standing for traffic from several locations with their shares: its round
    trip to a site is the shares' weighted mean. One location is itself; none is None."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][0]
    total = sum(share for _, share in parts)
    return MIX + ",".join(f"{loc}={share / total:.6g}" for loc, share in parts)


def _parts(origin: str) -> list[tuple[str, float]]:
    out = []
    for part in origin[len(MIX) :].split(","):
        location, _, share = part.rpartition("=")
        out.append((location, float(share)))
    return out


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
        """Round trip in ms, 0 within one location, None when never measured. From a mixed
        origin (`mixed_origin`): the share-weighted mean, None if any part is unknown."""
        if src.startswith(MIX):
            total = 0.0
            for location, share in _parts(src):
                part = self.rtt(location, dst)
                if part is None:
                    return None
                total += share * part
            return total
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
