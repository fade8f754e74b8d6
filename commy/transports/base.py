"""The transport contract.

A plugin registers ``register("name", factory)`` through ``commy_register_transports``;
``factory()`` returns a `Transport`. A transport moves whole protocol messages (one
message = one ``str`` holding a JSON document, see docs/protocol.md); it neither parses
nor authenticates them. It must tell the server who is on the other end (`PeerInfo`),
because authenticators (mTLS) need the verified peer certificate and the address.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs


@attrs.frozen
class PeerInfo:
    transport: str
    remote_address: str | None = None
    #: the verified client certificate as returned by ``SSLObject.getpeercert()`` (a dict)
    peer_certificate: dict[str, Any] | None = None
    #: the same certificate in DER form, for authenticators that parse it themselves
    peer_certificate_der: bytes | None = None
    tls: bool = False
    #: True when the peer is certainly on this machine (in-process, loopback, unix socket)
    same_host: bool = False


@attrs.frozen
class ClientOptions:
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    max_message_size: int = 1 << 20
    #: a blocking connection may poll this long for an answer before it sleeps (µs)
    spin_us: float = 0.0
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    #: plain (non-TLS) listeners need this explicit opt-in and bind loopback only
    allow_insecure: bool = False
    max_message_size: int = 1 << 20
    extra: dict[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Connection(Protocol):
    peer: PeerInfo

    async def send(self, message: str) -> None:
        """Send one whole message; `ConnectionLost` if the peer is gone.

        Several tasks may call this at once: the connection sends each message whole
        and in the order the calls took their turn (callers rely on it and take no lock).
        """

    async def receive(self) -> str:
        """The next whole message; `ConnectionLost` when the connection ends.

        One task at a time (the caller arranges that).
        """

    async def aclose(self) -> None:
        """Close (idempotent)."""


ConnectionHandler = Callable[[Connection], Awaitable[None]]


@runtime_checkable
class BlockingConnection(Protocol):
    """A connection for a thread without an event loop (the blocking SDK's requests).

    Offered by transports that have a ``connect_blocking(url, options)`` method (an
    optional part of the contract): one thread uses it at a time.
    """

    peer: PeerInfo

    def send(self, message: str) -> None:
        """Send one whole message; `ConnectionLost` if the peer is gone."""

    def receive(self, timeout: float | None = None) -> str:
        """The next whole message; `ConnectionLost` when the connection ends, `Timeout`
        (after which the connection is closed) when none came within ``timeout`` s."""

    def close(self) -> None:
        """Close (idempotent)."""


@runtime_checkable
class Transport(Protocol):
    name: str

    async def connect(self, url: str, options: ClientOptions) -> Connection:
        """Open a client connection to ``url``."""

    async def serve(
        self,
        handler: ConnectionHandler,
        options: ServerOptions,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled; run ``handler(conn)`` for each connection concurrently.

        Calls ``task_status.started(url)`` with a URL clients can connect to once bound.
        """
