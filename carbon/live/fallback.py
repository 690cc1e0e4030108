"""A CarbonSource that asks an ordered chain of sources per zone, so an outage degrades the
numbers instead of stopping the scheduler.

A typical chain is live -> its cached view -> the static table::

    em = ElectricityMapsSource(settings, session=session)
    static = StaticTableSource.default()
    carbon = FallbackSource({"DE": [em, em.cached(), static]}, default=[static])

`current` returns the first reading any source of the zone's chain gives: a source that raises
a `SourceError` or answers None is passed over. `forecast` fills the window hour by hour: the
first source's readings are kept, and each later source is asked only while hours are still
missing, and only those hours are taken from it (a 24-hour live forecast, then the static mean
for the rest of a 48-hour window). Every reading keeps the `source` it came from, and those
served by a cached view past their TTL are ``stale``, so reports show what they rest on.

Nothing raises out of the chain while a later source answers. When no source answers and at
least one failed, `SourceUnavailable` says which failed and why (the failover history); when
every source simply does not know the zone, the answer is None / [] as the protocol asks.

Bases: every source of a chain must serve the same accounting basis (`carbon.basis`); a
chain that would mix two is refused when it is built (`BasisMismatch` names the source).
Sources that declare no basis (test doubles) are not checked.

Logging: the first failure of a source for a zone is logged once at WARNING, with the error
message (which never holds a key, see `errors.py`); repeats during the same outage are not.
The first success after an outage is logged at INFO and re-arms the warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

from carbon.base import CarbonSource, IntensityReading
from carbon.basis import Basis, BasisMismatch, basis_of
from carbon.live.errors import SourceError, SourceUnavailable
from carbon.live.series import HOUR, as_utc, floor_hour

__all__ = ["FallbackSource"]

log = logging.getLogger(__name__)


class FallbackSource:
    """Per zone, an ordered chain of CarbonSources tried in turn; `default` for other zones."""

    name: str = "fallback"

    def __init__(
        self,
        chains: Mapping[str, Sequence[CarbonSource]],
        *,
        default: Sequence[CarbonSource] = (),
    ) -> None:
        self._chains = {zone: tuple(chain) for zone, chain in chains.items()}
        self._default = tuple(default)
        self.basis: Basis | None = _one_basis([*self._default, *self._all_chained()])
        self.bases: frozenset[Basis] = (
            frozenset() if self.basis is None else frozenset({self.basis})
        )
        self._down: set[tuple[str, str]] = set()  # (zone, source name) in an outage

    def __repr__(self) -> str:
        return f"FallbackSource(zones={sorted(self._chains)}, default={len(self._default)})"

    def _all_chained(self) -> list[CarbonSource]:
        return [source for chain in self._chains.values() for source in chain]

    def chain(self, zone: str) -> tuple[CarbonSource, ...]:
        """The sources asked for `zone`, in order."""
        return self._chains.get(zone, self._default)

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        """The first reading a source of the zone's chain gives."""
        as_utc(at, name="at")
        failures: list[str] = []
        chain = self.chain(zone)
        for index, source in enumerate(chain):
            try:
                reading = await source.current(zone, at=at)
            except SourceError as exc:
                self._failed(zone, source, exc, chain[index + 1 :], failures)
                continue
            self._answered(zone, source)
            if reading is not None:
                return reading
        self._raise_if_all_failed(zone, failures)
        return None

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        """Hourly readings for [start, end), each hour from the first source that has it."""
        start_utc = as_utc(start, name="start")
        end_utc = as_utc(end, name="end")
        if end_utc <= start_utc:
            return []
        wanted = _hours(start_utc, end_utc)
        got: dict[datetime, IntensityReading] = {}
        failures: list[str] = []
        chain = self.chain(zone)
        for index, source in enumerate(chain):
            try:
                readings = await source.forecast(zone, start=start, end=end)
            except SourceError as exc:
                self._failed(zone, source, exc, chain[index + 1 :], failures)
                continue
            self._answered(zone, source)
            for reading in readings:
                got.setdefault(reading.at, reading)
            if wanted <= got.keys():
                break
        if not got:
            self._raise_if_all_failed(zone, failures)
        return [got[hour] for hour in sorted(got)]

    def _failed(
        self,
        zone: str,
        source: CarbonSource,
        exc: SourceError,
        rest: Sequence[CarbonSource],
        failures: list[str],
    ) -> None:
        failures.append(f"{source.name}: {exc}")
        if (zone, source.name) in self._down:
            return
        self._down.add((zone, source.name))
        then = ", ".join(s.name for s in rest) or "nothing"
        log.warning(
            "carbon source %s failed for zone %s (%s: %s); falling back to %s",
            source.name,
            zone,
            type(exc).__name__,
            exc,
            then,
        )

    def _answered(self, zone: str, source: CarbonSource) -> None:
        if (zone, source.name) in self._down:
            self._down.discard((zone, source.name))
            log.info("carbon source %s answers again for zone %s", source.name, zone)

    def _raise_if_all_failed(self, zone: str, failures: list[str]) -> None:
        """Nothing answered: an outage if any source failed, else the zone is just unknown."""
        if failures:
            raise SourceUnavailable(
                f"no carbon source answered for zone {zone}: " + "; ".join(failures),
                provider=self.name,
                attempts=len(failures),
            )


def _one_basis(sources: Sequence[CarbonSource]) -> Basis | None:
    """The one basis the declared sources share; `BasisMismatch` if they mix two."""
    first: tuple[str, Basis] | None = None
    for source in sources:
        basis = basis_of(source)
        if basis is None:
            continue
        if first is None:
            first = (source.name, basis)
        elif basis != first[1]:
            raise BasisMismatch(
                f"carbon source {source.name} serves the {basis} basis but {first[0]} "
                f"serves {first[1]}: one chain never mixes bases (carbon.basis)",
                source=source.name,
                basis=basis,
            )
    return None if first is None else first[1]


def _hours(start: datetime, end: datetime) -> set[datetime]:
    """The UTC hour starts overlapping [start, end)."""
    hours: set[datetime] = set()
    hour = floor_hour(start)
    while hour < end:
        hours.add(hour)
        hour += HOUR
    return hours
