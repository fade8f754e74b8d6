"""The WSS server: anyio TCP listener + `TLSListener` + wsproto upgrade + hand-written frames.

Not hypercorn/uvicorn: they verify client certificates but never hand them to the
application, and the mTLS authenticator must see who connected (FACTS.md, Transport).
Works on asyncio (uvloop too) and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSListener
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

#: seconds a client has for the TLS handshake, and then for the HTTP upgrade
HANDSHAKE_TIMEOUT = 10.0


class _QuietTLSListener(TLSListener):
    """A failed TLS handshake (an unauthorised client, a port scan) is routine for a
    server: log one line instead of anyio's ERROR with a traceback."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: Any) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        peer = format_address(stream.extra(SocketAttribute.remote_address, None))
        log.info("TLS handshake with %s failed: %r", peer, exc)


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


def _peer_info(stream: Any, transport: str) -> PeerInfo:
    address = stream.extra(SocketAttribute.remote_address, None)
    host = address[0] if isinstance(address, tuple) else None
    ssl_object = stream.extra(TLSAttribute.ssl_object, None)
    cert = stream.extra(TLSAttribute.peer_certificate, None) if ssl_object else None
    der = stream.extra(TLSAttribute.peer_certificate_binary, None) if ssl_object else None
    return PeerInfo(
        transport=transport,
        remote_address=format_address(address),
        # getpeercert() returns {} for a certificate that was not verified: that is no
        # identity an authenticator may trust, so report none.
        peer_certificate=cert or None,
        peer_certificate_der=der if cert else None,
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
    listener: Any = tcp
    if ssl_context is not None:
        # standard_compatible=False: no waiting for the peer's close_notify on close, so
        # a vanished client cannot hang a connection task.
        listener = _QuietTLSListener(
            tcp, ssl_context, standard_compatible=False, handshake_timeout=HANDSHAKE_TIMEOUT
        )

    async def one(stream: Any) -> None:
        # Everything is caught here: an exception escaping this task would cancel the
        # listener's task group, and one bad connection must never stop the server.
        peer = None
        try:
            set_nodelay(stream)
            peer = _peer_info(stream, transport)
            try:
                _target, leftover = await _upgrade(stream)
            except (TimeoutError, RemoteProtocolError, *NETWORK_ERRORS) as exc:
                log.info("WebSocket upgrade from %s failed: %r", peer.remote_address, exc)
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
                log.debug("connection from %s ended: %s", peer.remote_address, exc)
            finally:
                await conn.aclose()
        except Exception:
            log.exception("connection handler for %s failed", getattr(peer, "remote_address", "?"))
            await anyio.aclose_forcefully(stream)

    async with listener:
        url = format_url(ssl_context is not None, options.host, port, path)
        log.info("%s transport listening on %s", transport, url)
        task_status.started(url)
        await listener.serve(one)
