"""Replay of historical hourly grid intensity as a CarbonSource, for simulation.

Series come from CSV files in the normalized long format ``timestamp_utc,region,
gco2_per_kwh[,...]`` (see ``shared/data/carbon/README.md``). Each region becomes one hourly
series on the UTC hour grid, from its first to its last recorded hour:

* sub-hourly rows are averaged into their hour (a plain mean of the samples, which equals
  the time-weighted mean for the evenly spaced 15/30-minute files);
* an hour with no row (or only empty values) carries the previous hour's value forward and
  is marked ``estimated``; so is an hour whose source rows say ``estimated=true``.

Time shift. A simulation runs at its own dates, so a reading for instant ``t`` comes from

    series_hour = floor((t - anchor) / 1h)            and, with ``wrap=True``,
    series_hour = floor((t - anchor) / 1h) mod len(series)

where ``anchor`` is the instant that plays the series' first hour (it must be on a whole
UTC hour). Without an anchor each series plays at its own recorded dates (``anchor`` =
its first hour). Series of different regions can start on different dates; ``anchor``
maps onto each region's own first hour, and with ``wrap`` each loops over its own length.
Without ``wrap`` an instant outside the series has no reading (None / left out of a
forecast). Looping breaks the weekday and season phase at the seam, so prefer a series
at least as long as the simulation.

``forecast`` returns the recorded future: a perfect-foresight oracle, useful as the upper
bound of what time-shifting can achieve. Realistic forecasts (with error) are added by the
carbon-forecast work behind the same CarbonSource interface.

Basis. A file's ``gco2_per_kwh`` column is on the file's basis (``file_basis``; every shared
normalized file is life-cycle, per its README), and an optional ``gco2_per_kwh_direct``
column holds operational values (the Electricity Maps exports). A source is built for one
basis: it reads the column of that basis, and a file without one is refused
(`BasisMismatch`, naming the file) rather than played on the other basis.

Memory: one ``array('d')`` of values and one byte of flags per region-hour (two years of
one zone is about 160 kB). Stdlib only; like all of ``carbon``, nothing from ``broker``.
"""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from carbon.base import IntensityReading
from carbon.basis import Basis, DeploymentBasis, check_basis

__all__ = ["HourlySeries", "ReplaySource", "load_series"]

SOURCE_NAME = "replay"
_HOUR = timedelta(hours=1)
_HOUR_S = 3600
_REQUIRED = ("timestamp_utc", "region", "gco2_per_kwh")
_TRUE = frozenset({"true", "1", "yes"})
_DIRECT = "gco2_per_kwh_direct"  # operational values beside a life-cycle main column


@dataclass(frozen=True, slots=True, kw_only=True)
class HourlySeries:
    """One region's gap-free hourly intensity, starting at `first_hour` (UTC)."""

    region: str
    first_hour: datetime
    values: array[float]  # gCO2e/kWh, one per hour
    estimated: bytes  # 1 where the hour was gap-filled or flagged estimated by the data
    filled_hours: int  # hours with no data, carried forward from the previous hour

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end(self) -> datetime:
        """The instant just after the last hour."""
        return self.first_hour + len(self.values) * _HOUR


def _as_utc(moment: datetime, *, name: str) -> datetime:
    """The same instant in UTC; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class _Acc:
    """Running sum of the samples of one hour."""

    __slots__ = ("count", "estimated", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.estimated = False


def _value_column(
    path: Path, names: list[str], *, basis: DeploymentBasis, file_basis: DeploymentBasis
) -> int:
    """The column holding `basis` values: the main one, or the direct one for operational."""
    offers: set[Basis] = {file_basis}
    if file_basis == "lifecycle" and _DIRECT in names:
        offers.add("operational")
    check_basis(f"replay file {path}", offers=offers, wanted=basis)
    return 2 if basis == file_basis else names.index(_DIRECT)


def _read_file(
    path: Path,
    acc: dict[str, dict[int, _Acc]],
    seen: set[tuple[str, int]],
    *,
    basis: DeploymentBasis = "lifecycle",
    file_basis: DeploymentBasis = "lifecycle",
) -> None:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:3]) != _REQUIRED:
            raise ValueError(f"{path}: expected columns starting {_REQUIRED}, got {header}")
        names = [h.strip() for h in header]
        est_col = names.index("estimated") if "estimated" in names else None
        col = _value_column(path, names, basis=basis, file_basis=file_basis)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(_REQUIRED):
                raise ValueError(f"{path}:{line}: expected {len(names)} fields, got {len(row)}")
            stamp, region = row[0].strip(), row[1].strip()
            raw = row[col].strip() if len(row) > col else ""
            try:
                moment = datetime.fromisoformat(stamp)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: bad timestamp {stamp!r}") from exc
            if moment.tzinfo is None or not region:
                raise ValueError(f"{path}:{line}: naive timestamp or empty region in {row}")
            # Integer seconds since the epoch: exact, and cheap to bucket into hours.
            seconds = math.floor(moment.timestamp())
            if (region, seconds) in seen:
                raise ValueError(f"{path}:{line}: duplicate row for {region} at {stamp}")
            seen.add((region, seconds))
            hours = acc.setdefault(region, {})
            cell = hours.setdefault(seconds // _HOUR_S, _Acc())
            if not raw:
                continue  # a missing value: the hour is gap-filled unless other rows cover it
            try:
                value = float(raw)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: bad intensity {raw!r}") from exc
            if not 0.0 <= value < math.inf:
                raise ValueError(f"{path}:{line}: intensity {value} out of range")
            cell.total += value
            cell.count += 1
            if est_col is not None and len(row) > est_col:
                cell.estimated |= row[est_col].strip().lower() in _TRUE


def _build(region: str, hours: Mapping[int, _Acc]) -> HourlySeries | None:
    known = sorted(h for h, cell in hours.items() if cell.count)
    if not known:
        return None
    first, last = known[0], known[-1]
    values: array[float] = array("d")
    flags = bytearray()
    filled = 0
    previous = 0.0
    for hour in range(first, last + 1):
        cell = hours.get(hour)
        if cell is not None and cell.count:
            previous = cell.total / cell.count
            flags.append(1 if cell.estimated else 0)
        else:
            flags.append(1)
            filled += 1
        values.append(previous)
    return HourlySeries(
        region=region,
        first_hour=datetime.fromtimestamp(first * _HOUR_S, tz=UTC),
        values=values,
        estimated=bytes(flags),
        filled_hours=filled,
    )


def load_series(
    paths: Iterable[str | Path],
    *,
    basis: DeploymentBasis = "lifecycle",
    file_basis: DeploymentBasis = "lifecycle",
) -> dict[str, HourlySeries]:
    """Region -> hourly series in `basis` from normalized CSV files whose main column is on
    `file_basis`; one region may span several files."""
    acc: dict[str, dict[int, _Acc]] = {}
    seen: set[tuple[str, int]] = set()
    for path in paths:
        _read_file(Path(path), acc, seen, basis=basis, file_basis=file_basis)
    out: dict[str, HourlySeries] = {}
    for region, hours in acc.items():
        series = _build(region, hours)
        if series is not None:
            out[region] = series
    return out


class ReplaySource:
    """CarbonSource playing recorded hourly series, optionally shifted in time and looped."""

    name: str = SOURCE_NAME

    def __init__(
        self,
        series: Mapping[str, HourlySeries],
        *,
        aliases: Mapping[str, str] | None = None,
        anchor: datetime | None = None,
        wrap: bool = False,
        basis: DeploymentBasis = "lifecycle",
    ) -> None:
        self.basis: Basis = basis  # the basis the series were loaded in
        self.bases: frozenset[Basis] = frozenset({basis})
        if anchor is not None:
            anchor = _as_utc(anchor, name="anchor")
            if anchor != _floor_hour(anchor):
                raise ValueError(f"anchor must be on a whole UTC hour, got {anchor.isoformat()}")
        missing = sorted(set((aliases or {}).values()) - set(series))
        if missing:
            raise ValueError(f"aliases name regions with no series: {', '.join(missing)}")
        self._series: Mapping[str, HourlySeries] = MappingProxyType(dict(series))
        self._aliases: Mapping[str, str] = MappingProxyType(dict(aliases or {}))
        self._anchor = anchor
        self._wrap = wrap

    @classmethod
    def from_csv(
        cls,
        paths: str | Path | Sequence[str | Path],
        *,
        aliases: Mapping[str, str] | None = None,
        anchor: datetime | None = None,
        wrap: bool = False,
        basis: DeploymentBasis = "lifecycle",
        file_basis: DeploymentBasis = "lifecycle",
    ) -> ReplaySource:
        """Load normalized CSV files (one path or several) into a source, in `basis`."""
        files = [paths] if isinstance(paths, str | Path) else list(paths)
        series = load_series(files, basis=basis, file_basis=file_basis)
        return cls(series, aliases=aliases, anchor=anchor, wrap=wrap, basis=basis)

    @property
    def regions(self) -> frozenset[str]:
        """Regions with a series."""
        return frozenset(self._series)

    def series_for(self, zone: str) -> HourlySeries | None:
        """The series a zone plays: its alias target, else the region of the same name."""
        return self._series.get(self._aliases.get(zone, zone))

    def _index(self, series: HourlySeries, hour: datetime) -> int | None:
        base = self._anchor if self._anchor is not None else series.first_hour
        index = (hour - base) // _HOUR  # timedelta floor division: floors negatives too
        if self._wrap:
            return index % len(series)
        return index if 0 <= index < len(series) else None

    def _hours(
        self, zone: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, float, bool]]:
        series = self.series_for(zone)
        start_utc = _as_utc(start, name="start")
        end_utc = _as_utc(end, name="end")
        if series is None or end_utc <= start_utc:
            return []
        out: list[tuple[datetime, float, bool]] = []
        hour = _floor_hour(start_utc)
        while hour < end_utc:
            index = self._index(series, hour)
            if index is not None:
                out.append((hour, series.values[index], bool(series.estimated[index])))
            hour += _HOUR
        return out

    def hourly(self, zone: str, *, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        """(hour start, gCO2e/kWh) for each UTC hour overlapping [start, end): for simulators."""
        return [(hour, value) for hour, value, _ in self._hours(zone, start, end)]

    async def current(self, zone: str, *, at: datetime) -> IntensityReading | None:
        """The recorded value of the hour containing `at`, stamped with that hour's start."""
        hour = _floor_hour(_as_utc(at, name="at"))
        readings = self._hours(zone, hour, hour + _HOUR)
        if not readings:
            return None
        _, value, estimated = readings[0]
        return IntensityReading(
            zone=zone,
            at=hour,
            gco2_per_kwh=value,
            source=SOURCE_NAME,
            estimated=estimated,
            basis=self.basis,
        )

    async def forecast(
        self, zone: str, *, start: datetime, end: datetime
    ) -> list[IntensityReading]:
        """The recorded values of every UTC hour overlapping [start, end), marked forecast.

        A perfect-foresight oracle: the "forecast" is what actually happened. Hours outside
        an unwrapped series are left out.
        """
        return [
            IntensityReading(
                zone=zone,
                at=hour,
                gco2_per_kwh=value,
                source=SOURCE_NAME,
                forecast=True,
                estimated=estimated,
                basis=self.basis,
            )
            for hour, value, estimated in self._hours(zone, start, end)
        ]
