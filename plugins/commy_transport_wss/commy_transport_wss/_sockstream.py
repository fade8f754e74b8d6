"""A byte stream straight on a non-blocking socket (TLS through `ssl.SSLSocket`, in C).

anyio's `TLSStream` runs TLS through an `ssl.MemoryBIO` pair driven from Python: per
message it costs several Python-level reads, writes and buffer copies (~58 µs of server
CPU and most of a client's, FACTS.md). Here OpenSSL reads and writes the socket itself:
a receive is one `recv` that either returns data at once or raises "would block", and
only then does the task wait, in the event loop, for the socket to become readable
(`anyio.wait_readable` works on asyncio, uvloop and trio alike).

A send that completes without waiting does not yield to the loop. A task that always
can (a peer that reads fast while we flood it) would then never let the others run, so
every `FAIR_EVERY`-th such send yields once anyway.
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

#: how many sends may complete without waiting before one yields to the loop
FAIR_EVERY = 16
#: `recv(n)` allocates n bytes and shrinks them to what arrived; reading into one
#: buffer and copying out the few bytes that did is cheaper. Nothing awaits between the
#: read and the copy, so all connections of a thread can share it.
_RECV_BUFFER_SIZE = 1 << 18
_buffers = threading.local()


def _recv_buffer() -> memoryview:
    buf = getattr(_buffers, "view", None)
    if buf is None:
        buf = _buffers.view = memoryview(bytearray(_RECV_BUFFER_SIZE))
    return buf

_WOULD_BLOCK = (BlockingIOError, InterruptedError)


class SocketStream:
    """`send`/`receive`/`aclose` over a connected non-blocking socket (TLS or not)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._fast = 0
        self._closed = False

    # -- fairness ------------------------------------------------------------------

    async def _fair(self) -> None:
        self._fast += 1
        if self._fast >= FAIR_EVERY:
            self._fast = 0
            await checkpoint()

    # -- I/O -----------------------------------------------------------------------

    async def receive(self, max_bytes: int = 65536) -> bytes:
        sock = self.sock
        # Wait for readability first, then read: callers read only once their frame
        # decoder is empty, and in request/response traffic the answer is never there
        # yet, so trying the read first would cost a futile syscall per message. Bytes
        # OpenSSL has already decrypted (`pending`) are taken without waiting.
        if not (self._tls and sock.pending()):
            await self._wait_readable()
        while True:
            try:
                buf = _recv_buffer()
                n = sock.recv_into(buf, min(max_bytes, _RECV_BUFFER_SIZE))
            except (ssl.SSLWantReadError, *_WOULD_BLOCK):
                await self._wait_readable()  # a partial TLS record, or a spurious wake-up
                continue
            except ssl.SSLWantWriteError:  # a TLS key update wants to write first
                await anyio.wait_writable(sock)
                continue
            except ssl.SSLZeroReturnError:
                raise anyio.EndOfStream from None
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                    raise anyio.BrokenResourceError(str(exc)) from exc
                raise
            if not n:
                raise anyio.EndOfStream
            return buf[:n].tobytes()

    async def _wait_readable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        await anyio.wait_readable(self.sock)

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        sock = self.sock
        view = memoryview(data)
        waited = False
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = sock.send(view)
            except (ssl.SSLWantWriteError, *_WOULD_BLOCK):
                await anyio.wait_writable(sock)
                waited = True
                continue
            except ssl.SSLWantReadError:
                await anyio.wait_readable(sock)
                waited = True
                continue
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                    raise anyio.BrokenResourceError(str(exc)) from exc
                raise
            view = view[sent:]
        if not waited:
            await self._fair()

    def extra(self, attribute: Any, default: Any = None) -> Any:
        """Just enough of anyio's typed attributes for `set_nodelay`."""
        from anyio.abc import SocketAttribute

        if attribute is SocketAttribute.raw_socket:
            return self.sock
        return default

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Wake any task blocked in wait_readable/wait_writable on this socket before
        # its descriptor goes away (trio insists, and asyncio would leak the reader).
        anyio.notify_closing(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        await checkpoint()


async def tls_handshake(sock: ssl.SSLSocket) -> None:
    """Drive a non-blocking handshake to its end (the caller bounds it with a timeout)."""
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await anyio.wait_readable(sock)
        except ssl.SSLWantWriteError:
            await anyio.wait_writable(sock)


async def connect_socket(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port`` (each resolved address in turn)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError | None = None
    for family, type_, proto, _name, address in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            try:
                sock.connect(address)
            except BlockingIOError:
                await anyio.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect to {host}:{port}: {errno.errorcode.get(err, err)}") from None
            return sock
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            last = exc
    raise last or OSError(f"{host}:{port} resolves to no address")


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket (``host`` '' or '0.0.0.0' for all interfaces)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=512, reuse_port=False)
    sock.setblocking(False)
    return sock


async def accept(listener: socket.socket) -> tuple[socket.socket, Any]:
    while True:
        try:
            return listener.accept()
        except _WOULD_BLOCK:
            await anyio.wait_readable(listener)
        except OSError as exc:
            # Out of descriptors or a connection reset before we took it: the listener
            # itself is fine, try again a moment later.
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                await anyio.sleep(0.05)
            elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                raise
