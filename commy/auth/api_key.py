"""API keys: ``commy_<43 url-safe chars>``, stored only as SHA-256 hashes.

The first `KEY_ID_LENGTH` characters of the random part are kept in clear as the key id,
so a lookup touches one row; the hash of the whole key is then compared in constant time.
A key belongs to a principal of one tenant (or to a server-wide principal, tenant None).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from commy.auth.base import Accept, AuthContext, AuthRequest, AuthResult, Pass, Principal, Reject
from commy.transports.base import PeerInfo

PREFIX = "commy_"
KEY_ID_LENGTH = 12
KEY_PATTERN = re.compile(r"^commy_[A-Za-z0-9_-]{43}$")


def generate_key() -> tuple[str, str, bytes]:
    """A new key: ``(key, key_id, sha256)``; only the last two are ever stored."""
    token = secrets.token_urlsafe(32)  # 32 random bytes → 43 url-safe characters
    # The key id (the token's first characters) is typed on command lines: one that
    # starts with "-" would be read as an option (`commy keys revoke -x...`).
    while not token[0].isalnum():
        token = secrets.token_urlsafe(32)
    key = PREFIX + token
    return key, key_id_of(key), hash_key(key)


def key_id_of(key: str) -> str:
    return key[len(PREFIX) : len(PREFIX) + KEY_ID_LENGTH]


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def looks_like_key(key: object) -> bool:
    return isinstance(key, str) and bool(KEY_PATTERN.match(key))


class ApiKeyAuthenticator:
    name = "api_key"

    def __init__(self, context: AuthContext) -> None:
        self.store = context.store

    async def authenticate(self, request: AuthRequest, peer: PeerInfo) -> AuthResult:
        key = request.api_key
        if key is None:
            return Pass()
        if not looks_like_key(key):
            return Reject("malformed API key")
        row = self.store.api_key(key_id_of(key))
        # Hash and compare even for an unknown id so timing does not tell ids apart.
        stored = row.hash if row is not None else b"\0" * 32
        ok = hmac.compare_digest(hash_key(key), stored)
        if row is None or not ok or row.revoked:
            return Reject("unknown or revoked API key")
        if row.tenant is not None and row.tenant != request.tenant:
            return Reject("this API key belongs to another tenant")
        roles = self.store.principal_roles(row.tenant, row.principal)
        return Accept(Principal(request.tenant, row.principal, roles, credential=f"api_key:{row.key_id}"))
