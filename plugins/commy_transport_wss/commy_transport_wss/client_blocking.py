"""A blocking WSS client connection, for callers without an event loop (`commy.connect_sync`).

An event loop costs each wait for an answer an epoll registration, a loop turn and a
task switch: 15–30 µs of CPU per wait on this machine class, several times what the
bytes cost. A thread that blocks in ``recv`` pays none of it. Same wire format as the
async clients: wsproto for the HTTP upgrade, then the hand-written frame codec.
"""

from __future__ import annotations

import select
import socket
import ssl
import time

from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from commy.errors import ConnectionLost, Timeout
from commy.transports.base import ClientOptions, PeerInfo
from commy_transport_wss._common import (
    DEFAULT_FRAGMENT_SIZE,
    is_loopback,
    parse_url,
    set_nodelay_socket,
)
from commy_transport_wss._frames import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Decoder,
    ProtocolViolation,
    encode_close,
    encode_frame,
    encode_message,
    parse_close,
)

READ_SIZE = 1 << 16


class BlockingFrameConnection:
    """`commy.transports.BlockingConnection` over a blocking (TLS) socket; one thread at a time."""

    def __init__(
        self,
        sock: socket.socket,
        peer: PeerInfo,
        *,
        max_message_size: int,
        fragment_size: int,
        leftover: bytes,
        spin_us: float = 0.0,
    ) -> None:
        self._sock = sock
        self._timeout = sock.gettimeout()
        self._spin = spin_us / 1e6
        self._poll = None
        if self._spin > 0:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            self._poll = poller.poll
        # TLS sockets may hold decrypted bytes that a poll of the socket cannot see
        self._buffered = getattr(sock, "pending", None)
        self.peer = peer
        self._decoder = Decoder(expect_masked=False, max_message_size=max_message_size)
        if leftover:
            self._decoder.feed(leftover)
        self._fragment_size = fragment_size
        self._lost: ConnectionLost | None = None

    def send(self, message: str) -> None:
        if self._lost is not None:
            raise self._lost
        data = encode_message(message.encode("utf-8"), masked=True, fragment_size=self._fragment_size)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise self._fail_timeout("sending") from None
        except OSError as exc:
            raise self._fail(f"connection to {self.peer.remote_address} lost: {exc!r}") from None

    def receive(self, timeout: float | None = None) -> str:
        """The next whole message; `Timeout` (and the connection is dropped) after ``timeout`` s."""
        decoder = self._decoder
        sock = self._sock
        if timeout != self._timeout:  # settimeout is a syscall (FIONBIO): only on change
            sock.settimeout(timeout)
            self._timeout = timeout
        while True:
            if self._lost is not None:
                raise self._lost
            try:
                event = decoder.next_event()
            except ProtocolViolation as exc:
                self._close_with(exc.code, exc.reason)
                raise self._fail(f"protocol violation by the peer: {exc}", exc.code) from None
            if event is None:
                if self._poll is not None:
                    self._spin_wait()
                try:
                    data = sock.recv(READ_SIZE)
                except TimeoutError:
                    raise self._fail_timeout("waiting for an answer") from None
                except OSError as exc:
                    raise self._fail(f"connection to {self.peer.remote_address} lost: {exc!r}") from None
                if not data:
                    raise self._fail(f"connection to {self.peer.remote_address} closed by the peer")
                decoder.feed(data)
                continue
            opcode, payload = event
            if opcode == OP_TEXT:
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._close_with(CLOSE_INVALID_DATA, "text message is not UTF-8")
                    raise self._fail("peer sent invalid UTF-8", CLOSE_INVALID_DATA) from None
            if opcode == OP_PING:
                try:
                    sock.sendall(encode_frame(OP_PONG, payload, masked=True))
                except OSError as exc:
                    raise self._fail(f"connection to {self.peer.remote_address} lost: {exc!r}") from None
            elif opcode == OP_CLOSE:
                try:
                    code, reason = parse_close(payload)
                except ProtocolViolation as exc:
                    code, reason = exc.code, exc.reason
                self._close_with(code if code != 1005 else CLOSE_NORMAL, "")
                raise self._fail(f"peer closed the connection (code {code}{': ' + reason if reason else ''})", code)
            elif opcode != OP_PONG:
                self._close_with(1003, "binary messages unsupported")
                raise self._fail("peer sent a binary message", 1003)

    def _spin_wait(self) -> None:
        """Poll the socket for up to ``spin_us`` before the blocking ``recv`` sleeps.

        A thread that sleeps in ``recv`` is woken by the answer's arrival; on a VM whose
        idle vCPUs halt, that wake-up costs tens of µs (more after a long halt).
        Polling keeps the vCPU awake while an answer is imminent, at the price of a
        busy core for at most ``spin_us`` per wait (``client.spin_us``, default off).
        """
        if self._buffered is not None and self._buffered():
            return
        poll = self._poll
        assert poll is not None
        clock = time.perf_counter
        deadline = clock() + self._spin
        while not poll(0):
            if clock() >= deadline:
                return

    def _fail_timeout(self, what: str) -> Timeout:
        # A late answer may still arrive: the stream cannot be trusted to pair replies
        # with requests any more, so the connection ends here.
        self._fail(f"timed out {what}")
        return Timeout(f"no answer from {self.peer.remote_address} ({what} timed out)")

    def _fail(self, message: str, close_code: int | None = None) -> ConnectionLost:
        if self._lost is None:
            details = {} if close_code is None else {"close_code": close_code}
            self._lost = ConnectionLost(message, **details)
            self._drop()
        return self._lost

    def _close_with(self, code: int, reason: str) -> None:
        if self._lost is None:
            try:
                self._sock.settimeout(1.0)
                self._timeout = 1.0
                self._sock.sendall(encode_close(code, reason, masked=True))
            except OSError:
                pass

    def _drop(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._lost is None:
            self._close_with(CLOSE_NORMAL, "")
            self._fail("connection closed")


def connect_blocking(url: str, options: ClientOptions, *, transport: str) -> BlockingFrameConnection:
    target = parse_url(url)
    timeout = options.connect_timeout
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
        set_nodelay_socket(sock)
        if target.tls:
            ctx = options.ssl_context or ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=target.host)
        handshake = H11Handshake(ConnectionType.CLIENT)
        sock.sendall(handshake.send(Request(host=target.netloc, target=target.path)))
        leftover = _upgrade(sock, handshake)
    except TimeoutError:
        if sock is not None:
            sock.close()
        raise Timeout(f"connecting to {url} timed out after {timeout} s") from None
    except (OSError, RemoteProtocolError, ConnectionLost) as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, ConnectionLost):
            raise
        raise ConnectionLost(f"cannot connect to {url}: {exc!r}") from None
    peer = PeerInfo(
        transport=transport, remote_address=target.netloc, tls=target.tls, same_host=is_loopback(target.host)
    )
    return BlockingFrameConnection(
        sock,
        peer,
        max_message_size=options.max_message_size,
        fragment_size=int(options.extra.get("fragment_size", DEFAULT_FRAGMENT_SIZE)),
        leftover=leftover,
        spin_us=options.spin_us,
    )


def _upgrade(sock: socket.socket, handshake: H11Handshake) -> bytes:
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionLost("the server closed the connection during the WebSocket upgrade")
        handshake.receive_data(data)
        for event in handshake.events():
            if isinstance(event, AcceptConnection):
                h11_conn = getattr(handshake, "_h11_connection", None)
                return bytes(getattr(h11_conn, "trailing_data", (b"", False))[0])
            if isinstance(event, RejectConnection | RejectData):
                status = getattr(event, "status_code", "?")
                raise ConnectionLost(f"WebSocket upgrade refused: HTTP {status}")
