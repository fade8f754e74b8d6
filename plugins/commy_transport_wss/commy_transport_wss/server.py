"""The WSS server: anyio's TCP listener, TLS through memory BIOs (`_tlsstream`), wsproto
for the upgrade, hand-written frames.

Not hypercorn/uvicorn: they verify client certificates but never hand them to the
application, and the mTLS authenticator must see who connected (FACTS.md, Transport).
anyio's `TLSListener` would too, at a higher cost per message (`_tlsstream`).
Works on asyncio (uvloop too) and trio.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
from anyio.abc import SocketAttribute
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from commy.errors import ConfigError, ConnectionLost
from commy.transports.base import ConnectionHandler, PeerInfo, ServerOptions
from commy_transport_wss._common import (
    DEFAULT_FRAGMENT_SIZE,
    NETWORK_ERRORS,
    format_address,
    format_url,
    insecure_bind_check,
    is_loopback,
    log,
    set_nodelay,
)
from commy_transport_wss._connection import FrameConnection
from commy_transport_wss._tlsstream import TLSOverStream

#: seconds a client has for the TLS handshake, and then for the HTTP upgrade
HANDSHAKE_TIMEOUT = 10.0


async def _upgrade(stream: Any) -> tuple[str, bytes]:
    """Run the HTTP/1.1 WebSocket upgrade with wsproto; → (path, bytes read past it)."""
    handshake = H11Handshake(ConnectionType.SERVER)
    with anyio.fail_after(HANDSHAKE_TIMEOUT):
        while True:
            data = await stream.receive()
            try:
                handshake.receive_data(data)
                for event in handshake.events():
                    if isinstance(event, Request):
                        await stream.send(handshake.send(AcceptConnection()))
                        # RFC 6455 lets no client send frames before our 101, but a pipelining
                        # one may have; h11 keeps those bytes, hand them to the frame decoder.
                        h11_conn = getattr(handshake, "_h11_connection", None)
                        trailing = getattr(h11_conn, "trailing_data", (b"", False))[0]
                        return event.target, bytes(trailing)
            except RemoteProtocolError as exc:
                hint = exc.event_hint
                if isinstance(hint, RejectConnection):
                    try:
                        await stream.send(handshake.send(hint))
                    except Exception:  # noqa: BLE001 - the reply is a courtesy
                        pass
                raise


def _peer_info(ssl_object: ssl.SSLObject | None, address: Any, transport: str) -> PeerInfo:
    host = address[0] if isinstance(address, tuple) else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    return PeerInfo(
        transport=transport,
        remote_address=format_address(address),
        # getpeercert() returns {} for a certificate that was not verified: that is no
        # identity an authenticator may trust, so report none.
        peer_certificate=cert or None,
        peer_certificate_der=ssl_object.getpeercert(binary_form=True) if cert and ssl_object else None,
        tls=ssl_object is not None,
        same_host=is_loopback(host),
    )


async def serve(
    handler: ConnectionHandler,
    options: ServerOptions,
    *,
    transport: str = "wss",
    task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
) -> None:
    ssl_context = options.ssl_context
    if ssl_context is None:
        if not options.allow_insecure:
            raise ConfigError(
                "the wss transport needs a TLS server context (ServerOptions.ssl_context, "
                "config server.cert_file/key_file); a plain ws:// listener needs "
                "allow_insecure=True and binds loopback only"
            )
        insecure_bind_check(options.host)
    if options.max_message_size <= 0:
        raise ConfigError(f"max_message_size must be positive, got {options.max_message_size}")
    fragment_size = int(options.extra.get("fragment_size", DEFAULT_FRAGMENT_SIZE))
    path = str(options.extra.get("path", "/commy"))

    tcp = await anyio.create_tcp_listener(local_host=options.host, local_port=options.port)
    port = tcp.extra(SocketAttribute.local_port)

    async def one(raw: Any) -> None:
        # Everything is caught here: an exception escaping this task would cancel the
        # listener's task group, and one bad connection must never stop the server.
        address = raw.extra(SocketAttribute.remote_address, None)
        peer_name = format_address(address)
        stream: Any = raw
        try:
            set_nodelay(raw)
            ssl_object = None
            if ssl_context is not None:
                try:
                    with anyio.fail_after(HANDSHAKE_TIMEOUT):
                        stream = await TLSOverStream.wrap(raw, ssl_context, server_side=True)
                except (TimeoutError, *NETWORK_ERRORS) as exc:
                    # An unauthorised client, a port scan: routine for a server, one line.
                    log.info("TLS handshake with %s failed: %r", peer_name, exc)
                    await anyio.aclose_forcefully(raw)
                    return
                ssl_object = stream.ssl_object
            peer = _peer_info(ssl_object, address, transport)
            try:
                _target, leftover = await _upgrade(stream)
            except (TimeoutError, RemoteProtocolError, *NETWORK_ERRORS) as exc:
                log.info("WebSocket upgrade from %s failed: %r", peer_name, exc)
                await anyio.aclose_forcefully(stream)
                return
            conn = FrameConnection(
                stream,
                peer,
                client=False,
                max_message_size=options.max_message_size,
                fragment_size=fragment_size,
                leftover=leftover,
            )
            try:
                await handler(conn)
            except ConnectionLost as exc:
                log.debug("connection from %s ended: %s", peer_name, exc)
            finally:
                await conn.aclose()
        except Exception:
            log.exception("connection handler for %s failed", peer_name)
            await anyio.aclose_forcefully(stream)

    async with tcp:
        url = format_url(ssl_context is not None, options.host, port, path)
        log.info("%s transport listening on %s", transport, url)
        task_status.started(url)
        await tcp.serve(one)
