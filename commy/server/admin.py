"""Tenant administration over the protocol, and access changes applied to live sessions.

`AdminOps` is mixed into `commy.server.core.Server`: the ``_op_*`` methods answer
``Logout``, ``Grant``, ``Revoke``, ``ListGrants``, ``CreateApiKey``, ``RevokeApiKey`` and
``ListApiKeys``. Whoever changes access (these messages, ``commy keys``/``grant`` on the
store from another process, a test poking the store) is followed by `refresh_sessions`:
a session whose API key was revoked loses its authentication, and every subscription
whose principal no longer has read permission is closed with a ``SubscriptionClosed``
push. Requests check permissions on every call anyway; this is for what is already
running (subscriptions, cached roles).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from commy.auth.base import ROLE_SERVER_ADMIN, ROLES
from commy.errors import (
    CommyError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    TenantNotFound,
    Unauthorized,
)
from commy.names import check_object_name
from commy.server.permissions import READ, check_permission, check_service_pattern

if TYPE_CHECKING:
    from commy.server.core import Session

log = logging.getLogger(__name__)

#: how often the server looks for access changes made outside its own requests (s)
ACCESS_CHECK_INTERVAL = 0.25


class AdminOps:
    """Mixin for `Server` (uses its store, permissions, sessions and services)."""

    store: Any
    permissions: Any
    config: Any
    _sessions: dict[int, Session]
    _services: dict[tuple[str, str], Any]

    # ------------------------------------------------------------------ helpers
    def _admin_tenant(self, session: Session, msg: dict[str, Any]) -> str:
        p = session.principal
        assert p is not None
        tenant = check_object_name("tenant", msg.get("tenant", p.tenant))
        if not self.permissions.can_manage(p, tenant):
            raise PermissionDenied(f"principal {p.name!r} is not an admin of tenant {tenant!r}")
        if not self.store.tenant_exists(tenant):
            raise TenantNotFound(f"no tenant {tenant!r}")
        return tenant

    def _check_role_grantable(self, session: Session, role: str) -> None:
        if role not in ROLES:
            raise InvalidRequest(f"unknown role {role!r}; known: {sorted(ROLES)}")
        assert session.principal is not None
        if role == ROLE_SERVER_ADMIN and not session.principal.server_admin:
            raise PermissionDenied("only a server admin may hand out the server-admin role")

    # ------------------------------------------------------------------ messages
    async def _op_Logout(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.end_authentication(session, "logged out", notify=False)
        return {"type": "Ok"}

    async def _op_Grant(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        tenant = self._admin_tenant(session, msg)
        principal = check_object_name("principal", msg["principal"])
        role, service, permission = msg.get("role"), msg.get("service"), msg.get("permission")
        if role is not None:
            if service is not None or permission is not None:
                raise InvalidRequest("Grant takes either a role, or a service and a permission")
            self._check_role_grantable(session, role)
            self.store.ensure_principal(tenant, principal, [role])
        else:
            if service is None or permission is None:
                raise InvalidRequest("Grant needs a service (name or glob) and a permission, or a role")
            self.store.set_grant(tenant, principal, check_service_pattern(service), check_permission(permission))
        log.info("%s granted %s on %s to %s/%s", session.principal.name, role or permission,  # type: ignore[union-attr]
                 service or "tenant", tenant, principal)
        self.refresh_sessions()
        return {"type": "Ok"}

    async def _op_Revoke(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        tenant = self._admin_tenant(session, msg)
        principal = check_object_name("principal", msg["principal"])
        role, service = msg.get("role"), msg.get("service")
        if (role is None) == (service is None):
            raise InvalidRequest("Revoke takes either a role or a service (name or glob)")
        if role is not None:
            self._check_role_grantable(session, role)
            self.store.remove_roles(tenant, principal, [role])
        else:
            self.store.set_grant(tenant, principal, check_service_pattern(service), None)
        log.info("%s revoked %s from %s/%s", session.principal.name, role or service, tenant, principal)  # type: ignore[union-attr]
        self.refresh_sessions()
        return {"type": "Ok"}

    async def _op_ListGrants(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        p = session.principal
        assert p is not None
        tenant = check_object_name("tenant", msg.get("tenant", p.tenant))
        who = msg.get("principal")
        own = tenant == p.tenant and who == p.name  # anyone may list their own grants
        if not own:
            tenant = self._admin_tenant(session, msg)
        return {"type": "GrantList", "tenant": tenant, "grants": self.permissions.list_grants(tenant, who)}

    async def _op_CreateApiKey(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        p = session.principal
        assert p is not None
        principal = check_object_name("principal", msg["principal"])
        roles = set(msg.get("roles") or ())
        for role in roles:
            self._check_role_grantable(session, role)
        tenant: str | None
        if msg.get("server_wide"):
            if not p.server_admin:
                raise PermissionDenied("only a server admin may create server-wide keys")
            if roles != {ROLE_SERVER_ADMIN} or msg.get("grants"):
                raise InvalidRequest("a server-wide key has the server-admin role and no grants")
            tenant = None
        else:
            tenant = self._admin_tenant(session, msg)
        grants: dict[str, str] = {}
        for service, permission in (msg.get("grants") or {}).items():
            grants[check_service_pattern(service)] = check_permission(permission)
        key, key_id = self.store.create_api_key(
            tenant, principal, roles=roles, grants=grants, description=msg.get("description", "")
        )
        log.info("%s created API key %s for %s/%s", p.name, key_id, tenant or "*", principal)
        self.refresh_sessions()  # the principal may have gained roles
        out = {"type": "ApiKeyCreated", "key": key, "key_id": key_id, "principal": principal}
        if tenant is not None:
            out["tenant"] = tenant
        return out

    async def _op_RevokeApiKey(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        p = session.principal
        assert p is not None
        if not self.permissions.can_manage(p, p.tenant):
            raise PermissionDenied(f"principal {p.name!r} is not an admin of tenant {p.tenant!r}")
        key_id = msg["key_id"]
        row = self.store.api_key(key_id) if isinstance(key_id, str) else None
        # A tenant admin never learns whether another tenant's key id exists.
        if row is None or not (p.server_admin or row.tenant == p.tenant):
            raise NotFound(f"no API key with id {key_id!r} in tenant {p.tenant!r}")
        self.store.revoke_api_key(key_id)
        log.info("%s revoked API key %s", p.name, key_id)
        self.refresh_sessions()
        return {"type": "Ok"}

    async def _op_ListApiKeys(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        p = session.principal
        assert p is not None
        if p.server_admin and "tenant" not in msg:
            rows = self.store.list_api_keys()
        else:
            rows = self.store.list_api_keys(self._admin_tenant(session, msg))
        keys = []
        for r in rows:
            info = {"key_id": r.key_id, "principal": r.principal, "created": r.created,
                    "revoked": r.revoked, "description": r.description[:1024]}
            if r.tenant is not None:
                info["tenant"] = r.tenant
            keys.append(info)
        return {"type": "ApiKeyList", "keys": keys}

    # ------------------------------------------------------------------ live sessions
    def end_authentication(self, session: Session, reason: str, *, notify: bool) -> None:
        """The session is unauthenticated from now on and its subscriptions are closed."""
        for key in list(session.subscribed):
            self.drop_subscription(session, key, Unauthorized(reason), notify=notify)
        session.principal = None

    def drop_subscription(self, session: Session, key: tuple[str, str], why: CommyError, *, notify: bool) -> None:
        handle = self._services.get(key)
        if handle is not None:
            handle.subscribers.pop(session.id, None)
            self._stop_tracking_if_idle(handle)  # type: ignore[attr-defined]
        session.subscribed.discard(key)
        if notify and session._tg is not None:
            msg = {"type": "SubscriptionClosed", "tenant": key[0], "service": key[1],
                   "code": why.code, "message": why.message}
            session._tg.start_soon(self._send_quietly, session, msg)  # type: ignore[attr-defined]

    def refresh_sessions(self) -> None:
        """Apply the store's current keys, roles and grants to every live session."""
        for session in list(self._sessions.values()):
            try:
                self._refresh_session(session)
            except CommyError as exc:  # a store hiccup must not stop the others
                log.warning("session %d: access refresh failed: %s", session.id, exc)

    def _refresh_session(self, session: Session) -> None:
        p = session.principal
        if p is None:
            return
        cred = p.credential or ""
        if cred.startswith("api_key:"):
            row = self.store.api_key(cred[len("api_key:"):])
            if row is None or row.revoked:
                log.info("session %d: API key revoked; authentication ended", session.id)
                self.end_authentication(session, "the API key of this session was revoked", notify=True)
                return
            roles = self.store.principal_roles(row.tenant, row.principal)
        elif cred.startswith("mtls"):
            roles = self.store.principal_roles(p.tenant, p.name)
        else:
            roles = None  # a third-party authenticator's roles stay as it said
        if roles is not None:
            roles = frozenset(roles) | self.permissions.config_roles_of(p.tenant, p.name)
            if roles != p.roles:
                session.principal = p = attrs.evolve(p, roles=roles)
        for key in list(session.subscribed):
            if self.level(p, *key) < READ:  # type: ignore[attr-defined]
                self.drop_subscription(
                    session, key, PermissionDenied(f"read permission on {key[1]!r} was revoked"), notify=True
                )

    async def _access_loop(self) -> None:
        store = self.store
        if not hasattr(store, "check_external_changes"):
            return  # a store without change tracking: admin messages still refresh sessions
        last = store.generation
        while True:
            await anyio.sleep(ACCESS_CHECK_INTERVAL)
            try:
                changed = store.check_external_changes()
                if changed or store.generation != last:
                    last = store.generation
                    self.refresh_sessions()
            except CommyError as exc:
                log.warning("access check failed: %s", exc)
