"""A WebSocket after the upgrade, over any anyio byte stream, hand-written frames.

Reads happen in the task that calls `receive` (no background reader task: a task
hand-off per message costs more than the frame work, see FACTS.md); one task reads at a
time. Pings are answered and close frames handled inside `receive`. Sends take a lock:
several tasks may send on one connection (the transport contract allows it), and a
message must leave in one piece.
"""

from __future__ import annotations

from typing import Any

import anyio

from commy.errors import ConnectionLost
from commy.transports.base import PeerInfo
from commy_transport_wss._common import DEFAULT_FRAGMENT_SIZE, NETWORK_ERRORS, log
from commy_transport_wss._frames import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED_DATA,
    OP_BINARY,
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

#: read size: large enough that a 1 MiB message needs few trips through the TLS layer
READ_SIZE = 1 << 16
#: how long a polite close (close frame, then TCP close) may take before we just drop it
CLOSE_TIMEOUT = 2.0
#: after closing for a protocol violation: how long / how much of the peer's remaining
#: input is read and discarded so the close frame reaches it (see `_close_with`)
LINGER_TIMEOUT = 0.5
LINGER_BYTES = 4 << 20


class FrameConnection:
    """`commy.transports.Connection` for the server side and the lean client."""

    def __init__(
        self,
        stream: Any,
        peer: PeerInfo,
        *,
        client: bool,
        max_message_size: int,
        fragment_size: int = DEFAULT_FRAGMENT_SIZE,
        leftover: bytes = b"",
    ) -> None:
        self._stream = stream
        self.peer = peer
        self._masked = client  # RFC 6455: clients mask, servers don't
        self._decoder = Decoder(expect_masked=not client, max_message_size=max_message_size)
        if leftover:
            self._decoder.feed(leftover)
        self._fragment_size = fragment_size
        self._send_lock = anyio.Lock(fast_acquire=True)
        #: one reader at a time (a flag: the lock's checkpoint costs more than the check)
        self._receiving = False
        self._close_sent = False
        self._closed = False
        #: why the connection ended, raised again by every later call
        self._lost: ConnectionLost | None = None

    # -- sending -------------------------------------------------------------------

    async def send(self, message: str) -> None:
        if self._lost is not None:
            raise self._lost
        data = encode_message(
            message.encode("utf-8"), masked=self._masked, fragment_size=self._fragment_size
        )
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        lock = self._send_lock
        try:
            # The lock is almost never contended: take it without the cancellation
            # checkpoint `acquire()` costs, and wait for it only when another task holds it.
            try:
                lock.acquire_nowait()
            except anyio.WouldBlock:
                await lock.acquire()
            try:
                await self._stream.send(data)
            finally:
                lock.release()
        except NETWORK_ERRORS as exc:
            raise self._fail(f"connection to {self.peer.remote_address} lost: {exc!r}") from None

    # -- receiving -----------------------------------------------------------------

    async def receive(self) -> str:
        if self._receiving:
            raise anyio.BusyResourceError("receiving from")
        self._receiving = True
        try:
            return await self._receive()
        finally:
            self._receiving = False

    async def _receive(self) -> str:
        decoder = self._decoder
        while True:
            if self._lost is not None:
                raise self._lost
            try:
                event = decoder.next_event()
            except ProtocolViolation as exc:
                lost = self._fail(f"protocol violation by the peer: {exc}", exc.code)
                await self._close_with(exc.code, exc.reason, linger=True)
                raise lost from None
            if event is None:
                try:
                    data = await self._stream.receive(READ_SIZE)
                except NETWORK_ERRORS as exc:
                    lost = self._fail(f"connection to {self.peer.remote_address} lost: {exc!r}")
                    await self._drop()
                    raise lost from None
                decoder.feed(data)
                continue
            opcode, payload = event
            if opcode == OP_TEXT:
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    lost = self._fail("peer sent invalid UTF-8", CLOSE_INVALID_DATA)
                    await self._close_with(CLOSE_INVALID_DATA, "text message is not UTF-8", linger=True)
                    raise lost from None
            if opcode == OP_PING:
                await self._write(encode_frame(OP_PONG, payload, masked=self._masked))
            elif opcode == OP_CLOSE:
                await self._on_close_frame(payload)
            elif opcode == OP_BINARY:
                lost = self._fail("peer sent a binary message", CLOSE_UNSUPPORTED_DATA)
                await self._close_with(CLOSE_UNSUPPORTED_DATA, "binary messages unsupported", linger=True)
                raise lost
            # OP_PONG: nothing waits for pongs (we send no pings); skip it

    async def _on_close_frame(self, payload: bytes) -> None:
        try:
            code, reason = parse_close(payload)
        except ProtocolViolation as exc:
            code, reason = exc.code, exc.reason
        text = f"peer closed the connection (code {code}{': ' + reason if reason else ''})"
        lost = self._fail(text, code)
        # Echo the close (RFC 6455 §5.5.1), then drop TCP; the peer expects nothing more.
        await self._close_with(code if code != 1005 else CLOSE_NORMAL, "")
        raise lost

    # -- closing -------------------------------------------------------------------

    def _fail(self, message: str, close_code: int | None = None) -> ConnectionLost:
        if self._lost is None:
            details = {} if close_code is None else {"close_code": close_code}
            self._lost = ConnectionLost(message, **details)
            log.debug("%s", message)
        return self._lost

    async def _close_with(self, code: int, reason: str, *, linger: bool = False) -> None:
        """Send a close frame (once, best effort), then close the stream.

        ``linger`` (only from the reading task): read and discard what the peer still
        sends for a moment first. Closing a socket with unread input makes the kernel send
        a reset, which can destroy our close frame before the peer reads it; a peer that
        was in the middle of a large message would then never learn the close code.
        """
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            if not self._close_sent and not self._closed:
                self._close_sent = True
                try:
                    async with self._send_lock:
                        await self._stream.send(encode_close(code, reason, masked=self._masked))
                except NETWORK_ERRORS:
                    pass
                if linger:
                    await self._discard_input()
        await self._drop()

    async def _discard_input(self) -> None:
        budget = LINGER_BYTES
        with anyio.move_on_after(LINGER_TIMEOUT):
            try:
                while budget > 0:
                    budget -= len(await self._stream.receive(READ_SIZE))
            except NETWORK_ERRORS:
                pass  # EOF or reset: the peer has hung up, nothing more to wait for

    async def _drop(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            # Another task may be writing the close frame right now (the server closes a
            # session from one task while its handler closes the connection from another):
            # let it finish, or the peer sees the TCP close without the close code.
            with anyio.move_on_after(CLOSE_TIMEOUT / 2):
                async with self._send_lock:
                    pass
            try:
                await self._stream.aclose()
            except NETWORK_ERRORS:
                pass

    async def aclose(self) -> None:
        self._fail("connection closed")
        await self._close_with(CLOSE_NORMAL, "")
