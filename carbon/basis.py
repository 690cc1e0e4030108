"""Carbon accounting bases, and the one rule the chain keeps: never mix them.

A grid intensity is only comparable with another of the same basis:

* ``operational`` (Electricity Maps "direct", Google's "grid carbon intensity", the GB
  Carbon Intensity API): combustion emissions at the power plant only;
* ``lifecycle`` (Electricity Maps' default "LCA", IPCC life-cycle factors): also upstream
  emissions (fuel supply, plant construction), higher, most visibly on clean grids;
* ``marginal`` (WattTime's MOER): the emission rate of the generators that follow a change
  in load. A different signal, not an average of the mix; no deployment basis accepts it.

A deployment picks ``operational`` or ``lifecycle`` (`carbon.settings`). Every source says
which bases it can serve (``bases``) and which one it serves (``basis``); a source that
offers both converts by serving the chosen one, and any other is refused when the chain is
built, with a `BasisMismatch` naming the source and the basis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

__all__ = [
    "AVERAGE_BASES",
    "Basis",
    "BasisMismatch",
    "DeploymentBasis",
    "basis_of",
    "check_basis",
    "parse_basis",
]

Basis = Literal["operational", "lifecycle", "marginal"]
DeploymentBasis = Literal["operational", "lifecycle"]
AVERAGE_BASES: tuple[DeploymentBasis, ...] = get_args(DeploymentBasis)

# Labels used by data files and provider APIs for each basis.
_LABELS: dict[str, Basis] = {
    "operational": "operational",
    "location-based operational": "operational",
    "direct": "operational",
    "lifecycle": "lifecycle",
    "location-based lifecycle": "lifecycle",
    "lca": "lifecycle",
    "marginal": "marginal",
    "moer": "marginal",
}


class BasisMismatch(ValueError):
    """A source cannot serve the deployment's basis (or a chain would mix bases)."""

    def __init__(self, message: str, *, source: str, basis: str) -> None:
        super().__init__(message)
        self.source = source
        self.basis = basis


def parse_basis(label: str) -> Basis:
    """The basis a data file's label names ("location-based operational", "direct", ...)."""
    try:
        return _LABELS[label.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown carbon accounting basis {label!r}") from None


def basis_of(source: object) -> Basis | None:
    """The basis a source serves, or None for one that does not declare it (a test double)."""
    basis = getattr(source, "basis", None)
    return basis if basis in get_args(Basis) else None


def check_basis(name: str, *, offers: Iterable[str], wanted: str) -> None:
    """Raise `BasisMismatch` unless a source named `name` that `offers` these bases has `wanted`."""
    offered = sorted(set(offers))
    if wanted in offered:
        return
    raise BasisMismatch(
        f"carbon source {name} cannot serve the {wanted} basis (it offers "
        f"{', '.join(offered) or 'none'}); set carbon.basis to one it offers or remove it, "
        "since bases are never mixed",
        source=name,
        basis=wanted,
    )
