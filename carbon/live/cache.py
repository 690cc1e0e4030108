"""A TTL cache with one entry per (zone, endpoint), which also remembers expired entries.

Grid data changes once an hour (Electricity Maps, WattTime forecasts) or once a half-hour
(the GB API), while the scheduler asks every few seconds; one request per zone and endpoint
per TTL is plenty. Each key holds only the newest answer, together with the query parameters
that produced it: a fresh hit needs the same parameters, so a forecast for another window is
fetched again, while the cache stays bounded by zones x endpoints.

Expired entries are kept (up to `keep_s`) because a stale number is better than none during an
outage: the cached view of a live source serves them marked ``stale`` (see `base.py`).
Time comes from the caller, so tests move a virtual clock instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["CacheEntry", "TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[V]):
    """One cached answer: the value, the parameters asked with and when it was fetched."""

    value: V
    params: tuple[tuple[str, str], ...]
    fetched_at: datetime

    def age(self, now: datetime) -> timedelta:
        return now - self.fetched_at


class TTLCache(Generic[K, V]):
    """Newest answer per key; fresh for `ttl_s`, then kept as stale for `keep_s` more."""

    def __init__(self, *, ttl_s: float, keep_s: float, max_entries: int = 4096) -> None:
        if ttl_s < 0 or keep_s < 0:
            raise ValueError("ttl_s and keep_s must not be negative")
        self._ttl = timedelta(seconds=ttl_s)
        self._keep = timedelta(seconds=ttl_s + keep_s)
        self._max = max_entries
        self._entries: dict[K, CacheEntry[V]] = {}

    def fresh(self, key: K, params: tuple[tuple[str, str], ...], now: datetime) -> V | None:
        """The cached value if it was fetched with these parameters less than TTL ago."""
        entry = self._entries.get(key)
        if entry is None or entry.params != params or entry.age(now) >= self._ttl:
            return None
        return entry.value

    def any_age(self, key: K, now: datetime) -> tuple[V, bool] | None:
        """The newest value whatever its parameters, and whether it is past its TTL."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = entry.age(now)
        if age >= self._keep:
            del self._entries[key]
            return None
        return entry.value, age >= self._ttl

    def put(self, key: K, params: tuple[tuple[str, str], ...], value: V, now: datetime) -> None:
        """Store the newest answer for `key`, dropping the oldest entry when full."""
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            oldest = min(self._entries, key=lambda k: self._entries[k].fetched_at)
            del self._entries[oldest]
        self._entries[key] = CacheEntry(value=value, params=params, fetched_at=now)

    def __len__(self) -> int:
        return len(self._entries)
