"""Pieces shared by the server and both clients: URLs, loopback checks, socket options."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import anyio
import attrs
from anyio.abc import SocketAttribute

from commy.errors import ConfigError

log = logging.getLogger("commy_transport_wss")

DEFAULT_PATH = "/commy"
#: messages above this size are sent as several frames (the protocol chunks payloads at
#: 256 KiB, so ordinary messages travel as one frame)
DEFAULT_FRAGMENT_SIZE = 1 << 18

#: what a dead or reset connection raises on its way up through anyio and ssl
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
    ssl.SSLError,
)


@attrs.frozen
class Target:
    tls: bool
    host: str
    port: int
    path: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """``wss://host:port/path`` or ``ws://...`` → `Target` (ConfigError otherwise)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"WSS transport URL must start with wss:// or ws://, got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"WSS transport URL has no host: {url!r}")
    tls = parts.scheme == "wss"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ConfigError(f"WSS transport URL has a bad port: {url!r}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(tls, parts.hostname, port, path)


def format_url(tls: bool, host: str, port: int, path: str = DEFAULT_PATH) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if tls else 'ws'}://{host}:{port}{path}"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def insecure_bind_check(host: str) -> None:
    if not is_loopback(host):
        raise ConfigError(
            f"refusing a plain ws:// (unencrypted) listener on non-loopback host {host!r}: "
            "give the server a TLS context (server.cert_file/key_file) or bind 127.0.0.1"
        )


def set_nodelay(stream: Any) -> None:
    """Disable Nagle: a request/response protocol otherwise stalls ~44 ms per round trip."""
    set_nodelay_socket(stream.extra(SocketAttribute.raw_socket, None))


def set_nodelay_socket(sock: socket.socket | None) -> None:
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer may already be gone; the next I/O reports that
            pass


def format_address(address: Any) -> str | None:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return None if address is None else str(address)
