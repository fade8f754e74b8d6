"""Authenticators: who may connect, as which principal (see `commy.auth.base`)."""

from commy.auth.base import (
    ANY_SERVICE,
    PERMISSIONS,
    ROLE_SERVER_ADMIN,
    ROLE_TENANT_ADMIN,
    Accept,
    AuthContext,
    Authenticator,
    AuthRequest,
    AuthResult,
    Pass,
    Principal,
    Reject,
)

__all__ = [
    "ANY_SERVICE",
    "PERMISSIONS",
    "ROLE_SERVER_ADMIN",
    "ROLE_TENANT_ADMIN",
    "Accept",
    "AuthContext",
    "AuthRequest",
    "AuthResult",
    "Authenticator",
    "Pass",
    "Principal",
    "Reject",
]
