"""Helpers for the security tests: a PKI from `commy.certs`, a commy Server on a real TLS
socket (WSS plugin, in-process), raw protocol connections over it."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import anyio
import attrs
from serverkit import running  # noqa: F401 - re-exported: one server runner for all tests

import commy
from commy import certs, protocol
from commy.config import ClientConfig, Config, KernelConfig, LimitsConfig, MtlsConfig, ServerConfig
from commy.errors import ConnectionLost
from commy.plugins import get_plugins
from commy.transports.base import ClientOptions


@attrs.frozen
class Pki:
    root: Path
    ca: Path
    server: certs.Issued
    alice: certs.Issued  # tenant "a", principal "alice" (SAN URI)
    bob_cn: certs.Issued  # no tenant: CN "bob" only
    expired: certs.Issued  # alice again, expired yesterday
    foreign: certs.Issued  # alice, issued by another CA
    foreign_ca: Path


def make_pki(root: Path) -> Pki:
    main = root / "pki"
    ca = certs.create_ca(main)
    server = certs.issue_server_cert(main)
    alice = certs.issue_client_cert(main, "alice", "a")
    bob = certs.issue_client_cert(main, "bob")
    now = dt.datetime.now(dt.UTC)
    expired = certs.issue_client_cert(
        main, "alice", "a", not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
        stem="client-alice-expired",
    )
    other = root / "foreign"
    foreign_ca = certs.create_ca(other, name="someone else's CA")
    foreign = certs.issue_client_cert(other, "alice", "a")
    return Pki(main, ca.cert_file, server, alice, bob, expired, foreign, foreign_ca.cert_file)


def tls_config(data_dir: Path, pki: Pki, *, limits: LimitsConfig | None = None, mtls: MtlsConfig | None = None,
               **server: object) -> Config:
    opts: dict[str, object] = dict(
        host="127.0.0.1", port=0, transport="wss", tls=True,
        cert_file=str(pki.server.cert_file), key_file=str(pki.server.key_file),
        client_ca_file=str(pki.ca), authenticators=["mtls", "api_key"], poll_interval=0.002,
    )
    opts.update(server)
    return Config(
        data_dir=str(data_dir),
        kernel=KernelConfig(name="python"),
        client=ClientConfig(transport="wss-lean", timeout=10.0, ca_file=str(pki.ca)),
        server=ServerConfig(**opts),  # type: ignore[arg-type]
        limits=limits or LimitsConfig(),
        mtls=mtls or MtlsConfig(),
    )


def client_ctx(pki: Pki, cert: certs.Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return ctx


def connect(url: str, config: Config, tenant: str, api_key: str | None = None, *, ctx=None, **kw):
    return commy.connect(url, tenant=tenant, api_key=api_key, config=config, ssl_context=ctx, **kw)


class Raw:
    """A bare protocol connection over TLS (the lean WSS client), requests by hand."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.next_id = 1
        self.pushes: list[dict] = []

    @classmethod
    async def open(cls, url: str, ctx: ssl.SSLContext) -> Raw:
        conn = await get_plugins().transports.get("wss-lean")().connect(url, ClientOptions(ssl_context=ctx))
        return cls(conn)

    async def send(self, kind: str, **fields) -> int:
        mid = self.next_id
        self.next_id += 1
        await self.conn.send(protocol.encode({"type": kind, "id": mid, **fields}))
        return mid

    async def ask(self, kind: str, timeout: float = 5, **fields) -> dict:
        mid = await self.send(kind, **fields)
        with anyio.fail_after(timeout):
            while True:
                msg = protocol.decode(await self.conn.receive(), direction="response")
                if msg.get("id") == mid:
                    return msg
                if "id" not in msg:
                    self.pushes.append(msg)

    async def drain_pushes(self, seconds: float) -> list[dict]:
        """Pushes arriving within ``seconds`` (plus those seen during earlier requests)."""
        with anyio.move_on_after(seconds):
            try:
                while True:
                    msg = protocol.decode(await self.conn.receive(), direction="response")
                    if "id" not in msg:
                        self.pushes.append(msg)
            except ConnectionLost:
                pass
        out, self.pushes = self.pushes, []
        return out

    async def aclose(self) -> None:
        await self.conn.aclose()
