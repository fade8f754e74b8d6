"""A third-party commy authenticator: shared-secret tokens.

A token is ``<principal>:<hex HMAC-SHA256(secret, "<tenant>:<principal>")>``; the secret
comes from ``$EXAMPLE_AUTH_SECRET``. A client sends it as ``credentials={"token": ...}``
in ``Authenticate``. Token principals read every service of their tenant.

The three possible answers:

- no token in the request → `Pass` (the next authenticator in ``server.authenticators``
  decides, e.g. ``api_key``);
- a token that does not verify → `Reject` (the attempt ends: UNAUTHORIZED);
- a good token → `Accept` with the principal.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from commy import hookimpl
from commy.auth import Accept, AuthContext, AuthRequest, AuthResult, Pass, Principal, Reject
from commy.transports.base import PeerInfo

SECRET_ENV = "EXAMPLE_AUTH_SECRET"


def make_token(secret: bytes, tenant: str, principal: str) -> str:
    sig = hmac.new(secret, f"{tenant}:{principal}".encode(), hashlib.sha256).hexdigest()
    return f"{principal}:{sig}"


class TokenAuthenticator:
    name = "example_token"

    def __init__(self, context: AuthContext) -> None:
        # context.config is the server's Config, context.store its metadata store
        self.secret = os.environ.get(SECRET_ENV, "").encode()

    async def authenticate(self, request: AuthRequest, peer: PeerInfo) -> AuthResult:
        token = request.credentials.get("token")
        if token is None:
            return Pass()
        if not self.secret or not isinstance(token, str) or ":" not in token:
            return Reject("malformed token")
        principal = token.split(":", 1)[0]
        if not hmac.compare_digest(token, make_token(self.secret, request.tenant, principal)):
            return Reject("bad token")
        # the server still checks that the tenant exists and the principal's tenant matches
        return Accept(Principal(request.tenant, principal, grants={"*": "read"}, credential="example_token"))


@hookimpl
def commy_register_authenticators(register):
    register("example_token", TokenAuthenticator)
