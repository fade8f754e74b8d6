"""Server metadata in Redis: the same interface as `commy.server.store.Store`.

Every node of a scale-out reads and writes tenants, services, principals, grants and API
key hashes here, so a key made on one node authenticates on all. All metadata keys share
the hash tag ``{meta}``: multi-key transactions stay legal on Redis Cluster.

Calls are short and synchronous (like SQLite's): metadata changes are rare and the
server caches grants by `generation`. A metadata version counter in Redis moves on every
write; `check_external_changes` polls it so a grant revoked on one node is seen by all.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from commy.auth.base import PERMISSIONS, ROLES
from commy.errors import (
    AlreadyExists,
    InternalError,
    InvalidRequest,
    NotFound,
    ServiceNotFound,
    TenantNotFound,
)
from commy.names import check_object_name
from commy.server.store import KeyRow, ServiceRow, prepare_key_owner

log = logging.getLogger(__name__)

SERVER_WIDE = ""


def _redis_errors(fn):
    """Redis failures become a typed commy error (the client sees INTERNAL_ERROR)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise InternalError(f"metadata backplane (Redis) unavailable: {exc}") from exc

    return wrapper


class RedisStore:
    def __init__(self, client: Any, prefix: str, on_delete: Any = None) -> None:
        self._r = client
        meta = f"{prefix}:{{meta}}"
        self._tenants = f"{meta}:tenants"
        self._services = f"{meta}:services"
        self._principals = f"{meta}:principals"
        self._grants = f"{meta}:grants"
        self._keys = f"{meta}:keys"
        self._version = f"{meta}:version"
        #: called with (tenant, service or None) after a delete: drops the change streams
        self._on_delete = on_delete
        self._lock = threading.Lock()
        self.path = f"redis:{meta}"
        self.generation = 0
        self._seen_version: bytes | None = None

    # ------------------------------------------------------------------ plumbing
    def _bump(self, pipe: Any = None) -> None:
        if pipe is not None:
            pipe.incr(self._version)
        else:
            self._r.incr(self._version)
        self.generation += 1

    @_redis_errors
    def check_external_changes(self) -> bool:
        version = self._r.get(self._version)
        if version != self._seen_version:
            self._seen_version = version
            self.generation += 1
            return True
        return False

    def close(self) -> None:
        try:
            self._r.close()
        except Exception:  # closing a dead connection may fail; it is gone either way
            log.debug("closing the metadata connection failed", exc_info=True)

    # ------------------------------------------------------------------ tenants
    @_redis_errors
    def create_tenant(self, name: str) -> None:
        check_object_name("tenant", name)
        if not self._r.hsetnx(self._tenants, name, repr(time.time())):
            raise AlreadyExists(f"tenant {name!r} already exists")
        self._bump()

    @_redis_errors
    def tenant_exists(self, name: str) -> bool:
        return bool(self._r.hexists(self._tenants, name))

    @_redis_errors
    def list_tenants(self) -> list[str]:
        return sorted(k.decode() for k in self._r.hkeys(self._tenants))

    @_redis_errors
    def delete_tenant(self, name: str) -> list[str]:
        if not self.tenant_exists(name):
            raise TenantNotFound(f"no tenant {name!r}")
        prefix = f"{name}/"
        files = []
        pipe = self._r.pipeline(transaction=True)
        for hkey in (self._services, self._principals, self._grants):
            fields = [f for f in self._r.hkeys(hkey) if f.decode().startswith(prefix)]
            if hkey == self._services:
                files = [json.loads(v)[0] for v in self._r.hmget(hkey, fields)] if fields else []
            if fields:
                pipe.hdel(hkey, *fields)
        keys = [k for k, v in self._r.hgetall(self._keys).items() if json.loads(v)["tenant"] == name]
        if keys:
            pipe.hdel(self._keys, *keys)
        pipe.hdel(self._tenants, name)
        self._bump(pipe)
        pipe.execute()
        if self._on_delete is not None:
            self._on_delete(name, None)
        return files

    def _require_tenant(self, tenant: str) -> None:
        if not self.tenant_exists(tenant):
            raise TenantNotFound(f"no tenant {tenant!r}")

    # ------------------------------------------------------------------ services
    @_redis_errors
    def add_service(self, tenant: str, name: str, file: str, ephemeral: bool) -> ServiceRow:
        check_object_name("service", name)
        self._require_tenant(tenant)
        now = time.time()
        if not self._r.hsetnx(self._services, f"{tenant}/{name}", json.dumps([file, bool(ephemeral), now])):
            raise AlreadyExists(f"service {name!r} already exists in tenant {tenant!r}")
        self._bump()
        return ServiceRow(tenant, name, file, ephemeral, now)

    @_redis_errors
    def service(self, tenant: str, name: str) -> ServiceRow | None:
        raw = self._r.hget(self._services, f"{tenant}/{name}")
        if raw is None:
            return None
        file, ephemeral, created = json.loads(raw)
        return ServiceRow(tenant, name, file, bool(ephemeral), created)

    @_redis_errors
    def list_services(self, tenant: str | None = None) -> list[ServiceRow]:
        rows = []
        for field, raw in self._r.hgetall(self._services).items():
            t, n = field.decode().split("/", 1)
            if tenant is not None and t != tenant:
                continue
            file, ephemeral, created = json.loads(raw)
            rows.append(ServiceRow(t, n, file, bool(ephemeral), created))
        return sorted(rows, key=lambda r: (r.tenant, r.name))

    @_redis_errors
    def delete_service(self, tenant: str, name: str) -> ServiceRow:
        row = self.service(tenant, name)
        if row is None:
            raise ServiceNotFound(f"no service {name!r} in tenant {tenant!r}")
        # Only one node wins a concurrent delete; the others see NOT_FOUND.
        if not self._r.hdel(self._services, f"{tenant}/{name}"):
            raise ServiceNotFound(f"no service {name!r} in tenant {tenant!r}")
        self._bump()
        if self._on_delete is not None:
            self._on_delete(tenant, name)
        return row

    # ------------------------------------------------------------------ principals / grants
    @_redis_errors
    def ensure_principal(self, tenant: str | None, name: str, roles: Iterable[str] = ()) -> None:
        check_object_name("principal", name)
        roles = set(roles)
        unknown = roles - ROLES
        if unknown:
            raise InvalidRequest(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
        if tenant is not None:
            self._require_tenant(tenant)
        with self._lock:  # read-modify-write of one field; nodes race only on the same principal
            have = self.principal_roles(tenant, name)
            t = SERVER_WIDE if tenant is None else tenant
            self._r.hset(self._principals, f"{t}/{name}", json.dumps(sorted(have | roles)))
            self._bump()

    @_redis_errors
    def principal_roles(self, tenant: str | None, name: str) -> frozenset[str]:
        t = SERVER_WIDE if tenant is None else tenant
        raw = self._r.hget(self._principals, f"{t}/{name}")
        return frozenset(json.loads(raw)) if raw is not None else frozenset()

    @_redis_errors
    def set_grant(self, tenant: str, principal: str, service: str, permission: str | None) -> None:
        from commy.server.permissions import check_service_pattern

        check_service_pattern(service)
        field = f"{tenant}/{principal}/{service}"
        if permission is None:
            self._r.hdel(self._grants, field)
            self._bump()
            return
        if permission not in PERMISSIONS:
            raise InvalidRequest(f"unknown permission {permission!r}; use read, write or admin")
        self._require_tenant(tenant)
        self._r.hset(self._grants, field, permission)
        self._bump()

    @_redis_errors
    def remove_roles(self, tenant: str | None, name: str, roles: Iterable[str]) -> None:
        t = SERVER_WIDE if tenant is None else tenant
        with self._lock:
            have = self.principal_roles(tenant, name)
            if not have:
                return
            self._r.hset(self._principals, f"{t}/{name}", json.dumps(sorted(have - set(roles))))
            self._bump()

    def _grant_rows(self, tenant: str) -> list[tuple[str, str, str]]:
        out = []
        for field, perm in self._r.hgetall(self._grants).items():
            t, p, s = field.decode().split("/", 2)
            if t == tenant:
                out.append((p, s, perm.decode()))
        return out

    @_redis_errors
    def list_grants(self, tenant: str, principal: str | None = None) -> list[tuple[str, str, str]]:
        rows = [r for r in self._grant_rows(tenant) if principal is None or r[0] == principal]
        return sorted(rows)

    @_redis_errors
    def grants(self, tenant: str, principal: str) -> dict[str, str]:
        return {s: perm for p, s, perm in self._grant_rows(tenant) if p == principal}

    # ------------------------------------------------------------------ API keys
    @_redis_errors
    def create_api_key(
        self,
        tenant: str | None,
        principal: str,
        *,
        roles: Iterable[str] = (),
        grants: Mapping[str, str] | None = None,
        description: str = "",
    ) -> tuple[str, str]:
        from commy.auth.api_key import generate_key

        prepare_key_owner(self, tenant, principal, roles, grants)
        key, key_id, digest = generate_key()
        row = {
            "hash": bytes(digest).hex(),
            "tenant": SERVER_WIDE if tenant is None else tenant,
            "principal": principal,
            "created": time.time(),
            "revoked": False,
            "description": description,
        }
        self._r.hset(self._keys, key_id, json.dumps(row))
        self._bump()
        return key, key_id

    @_redis_errors
    def api_key(self, key_id: str) -> KeyRow | None:
        raw = self._r.hget(self._keys, key_id)
        return _key_row(key_id, json.loads(raw)) if raw is not None else None

    @_redis_errors
    def list_api_keys(self, tenant: str | None = None) -> list[KeyRow]:
        rows = [_key_row(k.decode(), json.loads(v)) for k, v in self._r.hgetall(self._keys).items()]
        if tenant is not None:
            rows = [r for r in rows if r.tenant == tenant]
        return sorted(rows, key=lambda r: r.created)

    @_redis_errors
    def revoke_api_key(self, key_id: str) -> None:
        with self._lock:
            raw = self._r.hget(self._keys, key_id)
            if raw is None:
                raise NotFound(f"no API key with id {key_id!r}")
            row = json.loads(raw)
            row["revoked"] = True
            self._r.hset(self._keys, key_id, json.dumps(row))
            self._bump()


def _key_row(key_id: str, d: dict[str, Any]) -> KeyRow:
    tenant = None if d["tenant"] == SERVER_WIDE else d["tenant"]
    return KeyRow(key_id, bytes.fromhex(d["hash"]), tenant, d["principal"], d["created"],
                  bool(d["revoked"]), d["description"])



