"""Who may do what: grants by exact service name or glob, roles, live revocation.

A principal's level on ``tenant/service`` is the highest of:

- ``admin`` for a server admin (any tenant) or a tenant admin (its own tenant);
- every grant whose service pattern matches (``fnmatch``: ``*``, ``?``, ``[...]``), from
  the authenticator (`Principal.grants`), from the store (admin messages, ``commy
  grant``), and from config (``[access] grants``).

Store grants are cached per principal and the cache is dropped whenever the store's
generation moves (every write through this process's `Store`, and writes by other
processes, which the server notices through SQLite's ``data_version``), so a revoke
applies to the next request of every live session.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from typing import Any

import attrs

from commy.auth.base import PERMISSIONS, ROLE_SERVER_ADMIN, ROLE_TENANT_ADMIN, ROLES, Principal
from commy.errors import ConfigError, InvalidRequest
from commy.names import check_object_name

log = logging.getLogger(__name__)

READ, WRITE, ADMIN = PERMISSIONS["read"], PERMISSIONS["write"], PERMISSIONS["admin"]
LEVEL_NAMES = {v: k for k, v in PERMISSIONS.items()}
_GLOB = frozenset("*?[")
_PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]{1,64}$")


def is_glob(pattern: str) -> bool:
    return not _GLOB.isdisjoint(pattern)


def check_service_pattern(pattern: object) -> str:
    """An exact service name, or a glob over service names (no path characters either way)."""
    if isinstance(pattern, str) and is_glob(pattern):
        if not _PATTERN.match(pattern) or ".." in pattern:
            raise InvalidRequest(
                f"invalid service pattern {pattern!r}: use letters, digits, '_', '.', '-' "
                "and the glob characters * ? [ ] !"
            )
        return pattern
    return check_object_name("service", pattern)


def check_permission(permission: object) -> str:
    if permission not in PERMISSIONS:
        raise InvalidRequest(f"unknown permission {permission!r}; use read, write or admin")
    return permission  # type: ignore[return-value]


def matches(pattern: str, service: str) -> bool:
    if pattern == service:
        return True
    return is_glob(pattern) and fnmatch.fnmatchcase(service, pattern)


def best_level(grants: dict[str, str], service: str) -> int:
    best = 0
    for pattern, perm in grants.items():
        if matches(pattern, service):
            best = max(best, PERMISSIONS.get(perm, 0))
    return best


@attrs.frozen
class ConfigGrant:
    tenant: str
    principal: str
    service: str
    permission: str


def _split_who(text: str, where: str) -> tuple[str, str]:
    tenant, sep, principal = text.strip().partition("/")
    if not sep:
        raise ConfigError(f"{where}: {text!r} needs TENANT/PRINCIPAL")
    return tenant.strip(), principal.strip()


def parse_config_grants(lines: list[str]) -> list[ConfigGrant]:
    """``"TENANT/PRINCIPAL:SERVICE_GLOB=PERMISSION"`` lines (config ``access.grants``)."""
    out = []
    for line in lines:
        who, sep, rest = line.partition(":")
        service, sep2, perm = rest.partition("=")
        if not sep or not sep2:
            raise ConfigError(f"access.grants: {line!r} is not TENANT/PRINCIPAL:SERVICE=PERMISSION")
        tenant, principal = _split_who(who, "access.grants")
        try:
            check_object_name("tenant", tenant)
            check_object_name("principal", principal)
            out.append(
                ConfigGrant(tenant, principal, check_service_pattern(service.strip()), check_permission(perm.strip()))
            )
        except InvalidRequest as exc:
            raise ConfigError(f"access.grants: {line!r}: {exc.message}") from None
    return out


def parse_config_roles(lines: list[str]) -> dict[tuple[str, str], frozenset[str]]:
    """``"TENANT/PRINCIPAL=ROLE"`` lines (config ``access.roles``); ``*`` as tenant: any tenant."""
    out: dict[tuple[str, str], set[str]] = {}
    for line in lines:
        who, sep, role = line.partition("=")
        if not sep:
            raise ConfigError(f"access.roles: {line!r} is not TENANT/PRINCIPAL=ROLE")
        tenant, principal = _split_who(who, "access.roles")
        role = role.strip()
        if role not in ROLES:
            raise ConfigError(f"access.roles: {line!r}: unknown role {role!r}; known: {sorted(ROLES)}")
        if tenant == "*" and role != ROLE_SERVER_ADMIN:
            raise ConfigError(f"access.roles: {line!r}: only server-admin may be given for every tenant")
        out.setdefault((tenant, principal), set()).add(role)
    return {k: frozenset(v) for k, v in out.items()}


class Permissions:
    """The server's permission checks (one instance per server)."""

    def __init__(self, config: Any, store: Any) -> None:
        self.store = store
        self.config_grants = parse_config_grants(config.access.grants)
        self.config_roles = parse_config_roles(config.access.roles)
        self._cache: dict[tuple[str, str], dict[str, str]] = {}
        self._cache_gen = -1

    # -- roles
    def config_roles_of(self, tenant: str, principal: str) -> frozenset[str]:
        return self.config_roles.get((tenant, principal), frozenset()) | self.config_roles.get(
            ("*", principal), frozenset()
        )

    def with_config_roles(self, principal: Principal) -> Principal:
        extra = self.config_roles_of(principal.tenant, principal.name)
        if extra - principal.roles:
            return attrs.evolve(principal, roles=principal.roles | extra)
        return principal

    def stored_roles(self, principal: Principal) -> frozenset[str]:
        """Roles as the store and config say now (server-admin keys live tenant-less)."""
        roles = set(self.store.principal_roles(principal.tenant, principal.name))
        if ROLE_SERVER_ADMIN in principal.roles:
            roles |= self.store.principal_roles(None, principal.name) & {ROLE_SERVER_ADMIN}
        return frozenset(roles) | self.config_roles_of(principal.tenant, principal.name)

    # -- grants
    def stored_grants(self, tenant: str, principal: str) -> dict[str, str]:
        gen = getattr(self.store, "generation", None)
        if gen is None:  # a store without change tracking (a backplane's): no cache
            return self.store.grants(tenant, principal)
        if gen != self._cache_gen:
            self._cache.clear()
            self._cache_gen = gen
        key = (tenant, principal)
        grants = self._cache.get(key)
        if grants is None:
            grants = self._cache[key] = self.store.grants(tenant, principal)
        return grants

    def level(self, principal: Principal, tenant: str, service: str) -> int:
        """The principal's permission level on ``tenant/service`` (0: none)."""
        if principal.server_admin:
            return ADMIN
        if principal.tenant != tenant:
            return 0
        if principal.tenant_admin:
            return ADMIN
        best = best_level(dict(principal.grants), service) if principal.grants else 0
        if best < ADMIN:
            best = max(best, best_level(self.stored_grants(tenant, principal.name), service))
        if best < ADMIN:
            for g in self.config_grants:
                if g.tenant == tenant and g.principal == principal.name and matches(g.service, service):
                    best = max(best, PERMISSIONS[g.permission])
        return best

    def can_manage(self, principal: Principal, tenant: str) -> bool:
        """Tenant administration: grants and API keys of ``tenant``."""
        if principal.server_admin:
            return True
        return principal.tenant == tenant and ROLE_TENANT_ADMIN in principal.roles

    def list_grants(self, tenant: str, principal: str | None = None) -> list[dict[str, str]]:
        rows = [
            {"principal": p, "service": s, "permission": perm, "source": "store"}
            for p, s, perm in self.store.list_grants(tenant, principal)
        ]
        rows += [
            {"principal": g.principal, "service": g.service, "permission": g.permission, "source": "config"}
            for g in self.config_grants
            if g.tenant == tenant and (principal is None or g.principal == principal)
        ]
        return sorted(rows, key=lambda r: (r["principal"], r["service"], r["source"]))
