"""Who is calling: a tenant and a role, resolved from a bearer token."""

from __future__ import annotations

from dataclasses import dataclass

from broker.domain.enums import Role


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    tenant: str
    role: Role
    token_name: str  # the configured label of the token, safe to log

    def sees_all_tenants(self) -> bool:
        return self.role.at_least(Role.OPERATOR)
