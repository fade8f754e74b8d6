"""The authenticator contract.

A plugin registers ``register("name", factory)`` through ``commy_register_authenticators``;
``factory(context)`` gets an `AuthContext` (the server's config and metadata store) and
returns an `Authenticator`. The server tries the authenticators named in
``server.authenticators`` in order: the first `Accept` wins, a `Reject` ends the attempt,
a `Pass` hands on to the next one. Nobody accepting means UNAUTHORIZED.
`Principal.grants` may carry grants by service name or glob (``"*"``, ``"sensor-*"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from commy.transports.base import PeerInfo

#: Permission levels; each includes the ones below it (read ⊂ write ⊂ admin).
PERMISSIONS = {"read": 1, "write": 2, "admin": 3}
#: Roles: a tenant admin holds admin on every service of its tenant; a server admin on
#: every tenant, and may create and delete tenants.
ROLE_TENANT_ADMIN = "tenant-admin"
ROLE_SERVER_ADMIN = "server-admin"
ROLES = frozenset({ROLE_TENANT_ADMIN, ROLE_SERVER_ADMIN})
#: A grant on this service name applies to every service of the tenant.
ANY_SERVICE = "*"


def permission_level(name: str) -> int:
    return PERMISSIONS[name]


@attrs.frozen
class Principal:
    """Who is on the other end of a connection, within one tenant."""

    tenant: str
    name: str
    roles: frozenset[str] = attrs.field(factory=frozenset, converter=frozenset)
    #: service name (or ``"*"``) → ``"read" | "write" | "admin"``; the server adds the
    #: grants it stores for (tenant, name) when it checks a request.
    grants: Mapping[str, str] = attrs.field(factory=dict)
    #: the credential that proved it, e.g. ``"api_key:<key id>"`` or ``"mtls:<sha256>"``;
    #: the server ends the session when an API key it names is revoked
    credential: str | None = None

    @property
    def server_admin(self) -> bool:
        return ROLE_SERVER_ADMIN in self.roles

    @property
    def tenant_admin(self) -> bool:
        return ROLE_TENANT_ADMIN in self.roles or self.server_admin


@attrs.frozen
class AuthRequest:
    """The fields of the ``Authenticate`` message."""

    tenant: str
    api_key: str | None = None
    credentials: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Accept:
    principal: Principal


@attrs.frozen
class Reject:
    reason: str = "authentication failed"


@attrs.frozen
class Pass:
    """This authenticator has nothing to say about these credentials."""


AuthResult = Accept | Reject | Pass


@attrs.frozen
class AuthContext:
    """What an authenticator factory receives from the server."""

    config: Any  # commy.config.Config
    store: Any  # commy.server.store.Store


@runtime_checkable
class Authenticator(Protocol):
    name: str

    async def authenticate(self, request: AuthRequest, peer: PeerInfo) -> AuthResult:
        """Decide about one ``Authenticate`` message from ``peer``."""
