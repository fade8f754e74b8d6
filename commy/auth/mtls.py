"""mTLS: a client certificate the TLS layer verified → a principal of one tenant.

The TLS layer (``server.client_ca_file``) has already checked the chain, validity and
key possession; this authenticator only reads the identity out of the verified
certificate (`PeerInfo.peer_certificate`, which transports set only for verified
certificates) and maps it with ``mtls.rules``:

    "uri:commy://{tenant}/{principal}"     SAN URI written by `commy certs client`
    "cn:{principal}@{tenant}"              subject CN of the form alice@acme
    "cn:alice => acme/alice"               a mapping table entry
    "dns:*.sensors.example.com => acme/sensors"

FIELD is ``cn``, ``dns``, ``email``, ``uri`` or ``ip``. ``{tenant}`` / ``{principal}``
capture one valid name each; ``*`` matches anything. The first rule that matches any
value of its field decides. A certificate mapped to another tenant than the one asked
for is rejected; no certificate, or no matching rule, passes to the next authenticator.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import attrs

from commy.auth.base import Accept, AuthContext, AuthRequest, AuthResult, Pass, Principal, Reject
from commy.errors import ConfigError, InvalidRequest
from commy.names import check_object_name
from commy.transports.base import PeerInfo

FIELDS = {"cn": None, "dns": "DNS", "email": "email", "uri": "URI", "ip": "IP Address"}
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"


@attrs.frozen
class Rule:
    text: str
    field: str
    regex: re.Pattern[str]
    target: tuple[str, str] | None  # (tenant template, principal template)

    def apply(self, value: str) -> tuple[str, str] | None:
        m = self.regex.fullmatch(value)
        if m is None:
            return None
        groups = m.groupdict()
        if self.target is None:
            return groups["tenant"], groups["principal"]
        return tuple(t.format(**groups) for t in self.target)  # type: ignore[return-value]


def parse_rule(text: str) -> Rule:
    field, sep, rest = text.partition(":")
    field = field.strip().lower()
    if not sep or field not in FIELDS:
        raise ConfigError(f"mtls.rules: {text!r} must start with one of {', '.join(FIELDS)} and ':'")
    pattern, arrow, target = rest.partition("=>")
    pattern = pattern.strip()
    regex = ""
    for piece in re.split(r"(\{tenant\}|\{principal\}|\*)", pattern):
        if piece == "{tenant}":
            regex += f"(?P<tenant>{_NAME})"
        elif piece == "{principal}":
            regex += f"(?P<principal>{_NAME})"
        elif piece == "*":
            regex += ".*"
        else:
            regex += re.escape(piece)
    try:
        compiled = re.compile(regex)
    except re.error as exc:  # e.g. {tenant} twice
        raise ConfigError(f"mtls.rules: {text!r}: {exc}") from None
    if arrow:
        tenant_t, slash, principal_t = target.strip().partition("/")
        if not slash:
            raise ConfigError(f"mtls.rules: {text!r}: the target must be TENANT/PRINCIPAL")
        names = set(compiled.groupindex)
        for t in (tenant_t, principal_t):
            for used in re.findall(r"\{(\w+)\}", t):
                if used not in names:
                    raise ConfigError(f"mtls.rules: {text!r}: {{{used}}} is not captured by the pattern")
        return Rule(text, field, compiled, (tenant_t.strip(), principal_t.strip()))
    if {"tenant", "principal"} - set(compiled.groupindex):
        raise ConfigError(
            f"mtls.rules: {text!r} needs {{tenant}} and {{principal}} in the pattern, or '=> TENANT/PRINCIPAL'"
        )
    return Rule(text, field, compiled, None)


def certificate_values(cert: dict[str, Any], field: str) -> list[str]:
    """The values of ``field`` in a ``getpeercert()`` dict."""
    if field == "cn":
        return [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    kind = FIELDS[field]
    return [v for k, v in cert.get("subjectAltName", ()) if k == kind]


def fingerprint(der: bytes | None) -> str | None:
    return hashlib.sha256(der).hexdigest() if der else None


class MtlsAuthenticator:
    name = "mtls"

    def __init__(self, context: AuthContext) -> None:
        self.store = context.store
        self.rules = [parse_rule(r) for r in context.config.mtls.rules]
        if not context.config.server.client_ca_file:
            # Without a client CA the TLS layer verifies nothing, so no certificate ever
            # reaches us; say so once instead of failing every login mysteriously.
            import logging

            logging.getLogger(__name__).warning(
                "the mtls authenticator is enabled but server.client_ca_file is not set: "
                "client certificates are not requested"
            )

    def map(self, cert: dict[str, Any]) -> tuple[str, str, str] | None:
        """``(tenant, principal, matched value)`` by the first matching rule."""
        for rule in self.rules:
            for value in certificate_values(cert, rule.field):
                found = rule.apply(value)
                if found is not None:
                    return found[0], found[1], value
        return None

    async def authenticate(self, request: AuthRequest, peer: PeerInfo) -> AuthResult:
        cert = peer.peer_certificate
        if not cert:
            return Pass()
        found = self.map(cert)
        if found is None:
            return Pass()
        tenant, principal, value = found
        try:
            check_object_name("tenant", tenant)
            check_object_name("principal", principal)
        except InvalidRequest as exc:
            return Reject(f"certificate identity {value!r} maps to an invalid name: {exc.message}")
        if tenant != request.tenant:
            return Reject(f"the client certificate ({value!r}) belongs to tenant {tenant!r}")
        roles = self.store.principal_roles(tenant, principal)
        fp = fingerprint(peer.peer_certificate_der)
        return Accept(Principal(tenant, principal, roles, credential=f"mtls:{fp}" if fp else "mtls"))
