"""The server's metadata in SQLite (``<data_dir>/commy.sqlite3``, mode 0600).

Tenants, services (→ the random file name of their ``.mem`` file), principals with their
roles, grants, and API key hashes. Variables are not here: each service file describes
itself. Calls are short and synchronous; a lock makes the store safe to share between
threads (the CLI and tests open it outside any event loop).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from commy.auth.base import PERMISSIONS, ROLES
from commy.errors import (
    AlreadyExists,
    FileError,
    InvalidRequest,
    NotFound,
    ServiceNotFound,
    TenantNotFound,
)
from commy.fileformat import ensure_data_dir
from commy.names import check_object_name

log = logging.getLogger(__name__)

DB_NAME = "commy.sqlite3"
SERVER_WIDE = ""  # tenant column value of principals and keys that belong to no tenant

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS services (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    file TEXT NOT NULL UNIQUE,
    ephemeral INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS principals (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    roles TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS grants (
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    service TEXT NOT NULL,
    permission TEXT NOT NULL,
    PRIMARY KEY (tenant, principal, service)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    tenant TEXT NOT NULL,
    principal TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT ''
);
"""


@attrs.frozen
class ServiceRow:
    tenant: str
    name: str
    file: str
    ephemeral: bool
    created: float


@attrs.frozen
class KeyRow:
    key_id: str
    hash: bytes
    tenant: str | None
    principal: str
    created: float
    revoked: bool
    description: str


class Store:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        root = ensure_data_dir(data_dir)
        self.path = Path(root) / DB_NAME
        try:
            # Create it 0600 ourselves: sqlite would use the umask.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            if self.path.stat().st_mode & 0o077:
                self.path.chmod(0o600)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise FileError(f"cannot open metadata store {str(self.path)!r}: {exc}") from exc
        self._lock = threading.Lock()
        #: moves on every write through this object, and when `check_external_changes`
        #: sees another process's write: caches of grants and keys compare against it
        self.generation = 0
        self._data_version = self._pragma_data_version()

    def _pragma_data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def check_external_changes(self) -> bool:
        """True (and a new generation) when another connection wrote since the last check."""
        version = self._pragma_data_version()
        if version != self._data_version:
            self._data_version = version
            self.generation += 1
            return True
        return False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: Iterable[object] = ()) -> list[tuple]:
        with self._lock:
            rows = self._db.execute(sql, tuple(args)).fetchall()
        if not sql.startswith("SELECT"):
            self.generation += 1
        return rows

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        self.generation += 1

    # ------------------------------------------------------------------ tenants
    def create_tenant(self, name: str) -> None:
        check_object_name("tenant", name)
        try:
            self._run("INSERT INTO tenants (name, created) VALUES (?, ?)", (name, time.time()))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"tenant {name!r} already exists") from None

    def tenant_exists(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM tenants WHERE name = ?", (name,)))

    def list_tenants(self) -> list[str]:
        return [r[0] for r in self._run("SELECT name FROM tenants ORDER BY name")]

    def delete_tenant(self, name: str) -> list[str]:
        """Forget the tenant and everything in it; returns the service file names to remove."""
        if not self.tenant_exists(name):
            raise TenantNotFound(f"no tenant {name!r}")
        files = [r[0] for r in self._run("SELECT file FROM services WHERE tenant = ?", (name,))]
        self._tx(
            [
                ("DELETE FROM services WHERE tenant = ?", (name,)),
                ("DELETE FROM grants WHERE tenant = ?", (name,)),
                ("DELETE FROM principals WHERE tenant = ?", (name,)),
                ("DELETE FROM api_keys WHERE tenant = ?", (name,)),
                ("DELETE FROM tenants WHERE name = ?", (name,)),
            ]
        )
        return files

    def _require_tenant(self, tenant: str) -> None:
        if not self.tenant_exists(tenant):
            raise TenantNotFound(f"no tenant {tenant!r}")

    # ------------------------------------------------------------------ services
    def add_service(self, tenant: str, name: str, file: str, ephemeral: bool) -> ServiceRow:
        check_object_name("service", name)
        self._require_tenant(tenant)
        now = time.time()
        try:
            self._run(
                "INSERT INTO services (tenant, name, file, ephemeral, created) VALUES (?, ?, ?, ?, ?)",
                (tenant, name, file, int(ephemeral), now),
            )
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"service {name!r} already exists in tenant {tenant!r}") from None
        return ServiceRow(tenant, name, file, ephemeral, now)

    def service(self, tenant: str, name: str) -> ServiceRow | None:
        rows = self._run(
            "SELECT tenant, name, file, ephemeral, created FROM services WHERE tenant = ? AND name = ?",
            (tenant, name),
        )
        return ServiceRow(*rows[0][:3], bool(rows[0][3]), rows[0][4]) if rows else None

    def list_services(self, tenant: str | None = None) -> list[ServiceRow]:
        sql = "SELECT tenant, name, file, ephemeral, created FROM services"
        args: tuple = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        rows = self._run(sql + " ORDER BY tenant, name", args)
        return [ServiceRow(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def delete_service(self, tenant: str, name: str) -> ServiceRow:
        row = self.service(tenant, name)
        if row is None:
            raise ServiceNotFound(f"no service {name!r} in tenant {tenant!r}")
        self._run("DELETE FROM services WHERE tenant = ? AND name = ?", (tenant, name))
        return row

    # ------------------------------------------------------------------ principals / grants
    def ensure_principal(self, tenant: str | None, name: str, roles: Iterable[str] = ()) -> None:
        """Create the principal or add ``roles`` to it."""
        check_object_name("principal", name)
        roles = set(roles)
        unknown = roles - ROLES
        if unknown:
            raise InvalidRequest(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
        t = SERVER_WIDE if tenant is None else tenant
        if tenant is not None:
            self._require_tenant(tenant)
        have = self.principal_roles(tenant, name)
        merged = json.dumps(sorted(have | roles))
        self._run(
            "INSERT INTO principals (tenant, name, roles) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant, name) DO UPDATE SET roles = excluded.roles",
            (t, name, merged),
        )

    def principal_roles(self, tenant: str | None, name: str) -> frozenset[str]:
        t = SERVER_WIDE if tenant is None else tenant
        rows = self._run("SELECT roles FROM principals WHERE tenant = ? AND name = ?", (t, name))
        return frozenset(json.loads(rows[0][0])) if rows else frozenset()

    def set_grant(self, tenant: str, principal: str, service: str, permission: str | None) -> None:
        """Grant ``permission`` on ``service`` (a name or a glob such as ``"*"`` or
        ``"sensor-*"``); None removes the grant."""
        from commy.server.permissions import check_service_pattern

        check_service_pattern(service)
        if permission is None:
            self._run(
                "DELETE FROM grants WHERE tenant = ? AND principal = ? AND service = ?",
                (tenant, principal, service),
            )
            return
        if permission not in PERMISSIONS:
            raise InvalidRequest(f"unknown permission {permission!r}; use read, write or admin")
        self._require_tenant(tenant)
        self._run(
            "INSERT INTO grants (tenant, principal, service, permission) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant, principal, service) DO UPDATE SET permission = excluded.permission",
            (tenant, principal, service, permission),
        )

    def remove_roles(self, tenant: str | None, name: str, roles: Iterable[str]) -> None:
        t = SERVER_WIDE if tenant is None else tenant
        have = self.principal_roles(tenant, name)
        if not have:
            return
        self._run(
            "UPDATE principals SET roles = ? WHERE tenant = ? AND name = ?",
            (json.dumps(sorted(have - set(roles))), t, name),
        )

    def list_grants(self, tenant: str, principal: str | None = None) -> list[tuple[str, str, str]]:
        """``(principal, service pattern, permission)`` rows of ``tenant``."""
        sql = "SELECT principal, service, permission FROM grants WHERE tenant = ?"
        args: tuple = (tenant,)
        if principal is not None:
            sql += " AND principal = ?"
            args += (principal,)
        return [tuple(r) for r in self._run(sql + " ORDER BY principal, service", args)]

    def grants(self, tenant: str, principal: str) -> dict[str, str]:
        rows = self._run(
            "SELECT service, permission FROM grants WHERE tenant = ? AND principal = ?",
            (tenant, principal),
        )
        return dict(rows)

    # ------------------------------------------------------------------ API keys
    def create_api_key(
        self,
        tenant: str | None,
        principal: str,
        *,
        roles: Iterable[str] = (),
        grants: Mapping[str, str] | None = None,
        description: str = "",
    ) -> tuple[str, str]:
        """A new key for ``principal`` (created if needed); returns ``(key, key_id)``.

        The key itself is returned once and never stored.
        """
        from commy.auth.api_key import generate_key

        prepare_key_owner(self, tenant, principal, roles, grants)
        key, key_id, digest = generate_key()
        self._run(
            "INSERT INTO api_keys (key_id, hash, tenant, principal, created, description) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, digest, SERVER_WIDE if tenant is None else tenant, principal, time.time(), description),
        )
        return key, key_id

    def api_key(self, key_id: str) -> KeyRow | None:
        rows = self._run(
            "SELECT key_id, hash, tenant, principal, created, revoked, description "
            "FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        return _key_row(rows[0]) if rows else None

    def list_api_keys(self, tenant: str | None = None) -> list[KeyRow]:
        sql = "SELECT key_id, hash, tenant, principal, created, revoked, description FROM api_keys"
        args: tuple = ()
        if tenant is not None:
            sql += " WHERE tenant = ?"
            args = (tenant,)
        return [_key_row(r) for r in self._run(sql + " ORDER BY created", args)]

    def revoke_api_key(self, key_id: str) -> None:
        with self._lock:
            cur = self._db.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,))
            changed = cur.rowcount
        self.generation += 1
        if not changed:
            raise NotFound(f"no API key with id {key_id!r}")


def prepare_key_owner(
    store: Any,
    tenant: str | None,
    principal: str,
    roles: Iterable[str],
    grants: Mapping[str, str] | None,
) -> None:
    """Check a key request and create its principal with roles and grants (any store)."""
    from commy.auth.base import ROLE_SERVER_ADMIN

    roles = set(roles)
    if tenant is None and roles != {ROLE_SERVER_ADMIN}:
        raise InvalidRequest("a key without a tenant must be a server-admin key")
    store.ensure_principal(tenant, principal, roles)
    for service, permission in (grants or {}).items():
        if tenant is None:
            raise InvalidRequest("grants need a tenant")
        store.set_grant(tenant, principal, service, permission)


def _key_row(r: tuple) -> KeyRow:
    tenant = None if r[2] == SERVER_WIDE else r[2]
    return KeyRow(r[0], bytes(r[1]), tenant, r[3], r[4], bool(r[5]), r[6])
