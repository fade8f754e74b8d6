"""The ``wss-lean`` client: anyio's TCP stream, TLS through memory BIOs (`_tlsstream`),
wsproto for the upgrade, hand-written frames.

Per message it does one encode, one write, and reads in the caller's task: no
background reader, no memory-stream hand-off, no httpcore wrappers, no Python TLS layer.
That is where httpx-ws spends ~360 µs of its ~466 µs per round trip (FACTS.md). Any task may open and
close it (unlike httpx-ws, there is no task group to tie it to one task).
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from commy.errors import ConnectionLost, Timeout
from commy.transports.base import ClientOptions, PeerInfo
from commy_transport_wss._common import (
    DEFAULT_FRAGMENT_SIZE,
    NETWORK_ERRORS,
    is_loopback,
    parse_url,
    set_nodelay,
)
from commy_transport_wss._connection import FrameConnection
from commy_transport_wss._tlsstream import TLSOverStream


async def _upgrade(stream: Any, host: str, path: str) -> bytes:
    """Client side of the HTTP upgrade; → the bytes the server sent after its 101."""
    handshake = H11Handshake(ConnectionType.CLIENT)
    await stream.send(handshake.send(Request(host=host, target=path)))
    while True:
        data = await stream.receive()
        handshake.receive_data(data)
        for event in handshake.events():
            if isinstance(event, AcceptConnection):
                # A server may speak first (a hello right after the 101): h11 holds
                # those bytes, and they belong to the frame decoder.
                h11_conn = getattr(handshake, "_h11_connection", None)
                return bytes(getattr(h11_conn, "trailing_data", (b"", False))[0])
            if isinstance(event, RejectConnection | RejectData):
                status = getattr(event, "status_code", "?")
                raise ConnectionLost(f"WebSocket upgrade refused: HTTP {status}")


async def connect(url: str, options: ClientOptions, *, transport: str = "wss-lean") -> FrameConnection:
    target = parse_url(url)
    ssl_context = None
    if target.tls:
        ssl_context = options.ssl_context or ssl.create_default_context()
    stream: Any = None
    try:
        with anyio.fail_after(options.connect_timeout):
            stream = await anyio.connect_tcp(target.host, target.port)
            set_nodelay(stream)
            if ssl_context is not None:
                stream = await TLSOverStream.wrap(
                    stream, ssl_context, server_side=False, hostname=target.host
                )
            leftover = await _upgrade(stream, target.netloc, target.path)
    except TimeoutError:
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        raise Timeout(f"connecting to {url} timed out after {options.connect_timeout} s") from None
    except (*NETWORK_ERRORS, RemoteProtocolError, ConnectionLost) as exc:
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        if isinstance(exc, ConnectionLost):
            raise
        raise ConnectionLost(f"cannot connect to {url}: {exc!r}") from None
    peer = PeerInfo(
        transport=transport,
        remote_address=target.netloc,
        tls=target.tls,
        same_host=is_loopback(target.host),
    )
    return FrameConnection(
        stream,
        peer,
        client=True,
        max_message_size=options.max_message_size,
        fragment_size=int(options.extra.get("fragment_size", DEFAULT_FRAGMENT_SIZE)),
        leftover=leftover,
    )
