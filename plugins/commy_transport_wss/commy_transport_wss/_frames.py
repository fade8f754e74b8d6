"""RFC 6455 frames, hand-written: the codec both the server and the lean client use.

wsproto does the HTTP upgrade; after it, this codec does the framing because wsproto's
event machinery costs ~46 µs per message on this machine class (FACTS.md), several times
the cost of the few struct operations a frame needs. No extensions are negotiated, so
reserved bits must be zero.
"""

from __future__ import annotations

import os
import struct
import threading

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


class ProtocolViolation(Exception):
    """The peer broke the framing rules; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


def mask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``key`` (masking and unmasking are one op).

    One big-integer XOR runs in C over the whole payload, ~50x faster than a Python loop
    over bytes and without numpy.
    """
    n = len(payload)
    if not n:
        return b""
    stream = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


class _MaskKeys:
    """Masking keys from the OS's random source, drawn 1,024 at a time: one ``getrandom``
    call per message was a syscall on every client send."""

    _BATCH = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._pos = 0
        # A forked child must not reuse the keys its parent will use.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pool, self._pos = b"", 0

    def next(self) -> bytes:
        with self._lock:
            pos = self._pos
            if pos >= len(self._pool):
                self._pool, pos = os.urandom(self._BATCH), 0
            self._pos = pos + 4
            return self._pool[pos : pos + 4]


_mask_keys = _MaskKeys()


def _header(first: int, length: int, masked: bool) -> bytes:
    bit = 0x80 if masked else 0
    if length < 126:
        return bytes((first, length | bit))
    if length < 65536:
        return _H16.pack(first, 126 | bit, length)
    return _H64.pack(first, 127 | bit, length)


def encode_frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    """One whole frame as one ``bytes`` (callers write it with one call: see FACTS.md,
    a frame split over two writes stalls ~44 ms on delayed ACKs)."""
    first = (0x80 if fin else 0) | opcode
    if masked:
        key = _mask_keys.next()
        return _header(first, len(payload), True) + key + mask(payload, key)
    return _header(first, len(payload), False) + payload


def encode_message(data: bytes, *, masked: bool, fragment_size: int, opcode: int = OP_TEXT) -> bytes:
    """A whole message, split into frames of at most ``fragment_size`` bytes."""
    if len(data) <= fragment_size:
        return encode_frame(opcode, data, masked=masked)
    view = memoryview(data)
    frames = []
    for start in range(0, len(data), fragment_size):
        chunk = bytes(view[start : start + fragment_size])
        fin = start + fragment_size >= len(data)
        frames.append(encode_frame(opcode if start == 0 else OP_CONT, chunk, masked=masked, fin=fin))
    return b"".join(frames)


def encode_close(code: int, reason: str = "", *, masked: bool) -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
    return encode_frame(OP_CLOSE, payload, masked=masked)


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) of a close frame; 1005 (no status) when it carries none."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    return code, payload[2:].decode("utf-8", errors="replace")


class Decoder:
    """Incremental frame parser: ``feed`` bytes, then ``next_event`` until it returns None.

    Events are ``(opcode, payload)``: whole messages (fragments joined once, with a list)
    or control frames, which may arrive between the fragments of a message.
    """

    __slots__ = ("buf", "expect_masked", "max_message_size", "_parts", "_size", "_opcode")

    def __init__(self, *, expect_masked: bool, max_message_size: int) -> None:
        self.buf = bytearray()
        self.expect_masked = expect_masked
        self.max_message_size = max_message_size
        self._parts: list[bytes] = []
        self._size = 0
        self._opcode = 0  # opcode of the message being reassembled, 0 = none

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_event(self) -> tuple[int, bytes] | None:
        buf = self.buf
        while True:
            have = len(buf)
            if have < 2:
                return None
            b0 = buf[0]
            b1 = buf[1]
            if b0 & 0x70:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if have < 4:
                    return None
                length = (buf[2] << 8) | buf[3]
                pos = 4
            elif length == 127:
                if have < 10:
                    return None
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
            masked = bool(b1 & 0x80)
            if masked is not self.expect_masked:
                raise ProtocolViolation(
                    CLOSE_PROTOCOL_ERROR,
                    "client frames must be masked" if self.expect_masked else "server frame masked",
                )
            if opcode >= 8:
                if opcode > OP_PONG:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if length > 125 or not b0 & 0x80:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "bad control frame")
            else:
                if opcode == OP_CONT:
                    if not self._opcode:
                        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation without a start")
                elif opcode in (OP_TEXT, OP_BINARY):
                    if self._opcode:
                        raise ProtocolViolation(
                            CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one"
                        )
                else:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
                # Checked on the header, before the payload is buffered, so an announced
                # 2 GiB frame fails at once instead of filling memory first.
                if self._size + length > self.max_message_size:
                    raise ProtocolViolation(
                        CLOSE_TOO_BIG,
                        f"message larger than the limit of {self.max_message_size} bytes",
                    )
            end = pos + length + (4 if masked else 0)
            if have < end:
                return None
            if masked:
                payload = mask(memoryview(buf)[pos + 4 : end], bytes(buf[pos : pos + 4]))
            else:
                payload = bytes(buf[pos:end])
            del buf[:end]
            if opcode >= 8:
                return opcode, payload
            if b0 & 0x80:  # FIN
                if not self._parts:
                    return (opcode or self._opcode), payload
                self._parts.append(payload)
                whole = b"".join(self._parts)
                opcode, self._opcode, self._parts, self._size = self._opcode, 0, [], 0
                return opcode, whole
            if opcode:
                self._opcode = opcode
            self._parts.append(payload)
            self._size += length
