"""In-process transport: anyio memory streams, for tests and embedding.

URLs look like ``inproc://name``; a server serving ``name`` accepts connections from
clients in the same process (any event loop task).
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from commy.errors import ConnectionLost, InvalidRequest
from commy.transports.base import (
    ClientOptions,
    Connection,
    ConnectionHandler,
    PeerInfo,
    ServerOptions,
)

_servers: dict[str, ObjectSendStream[Any]] = {}
_names = itertools.count(1)


class MemoryConnection:
    def __init__(self, send: ObjectSendStream[str], receive: ObjectReceiveStream[str], peer: PeerInfo) -> None:
        self._send = send
        self._receive = receive
        self.peer = peer

    async def send(self, message: str) -> None:
        try:
            await self._send.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionLost("in-process connection closed") from None

    async def receive(self) -> str:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionLost("in-process connection closed") from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def _pair(buffer: int) -> tuple[MemoryConnection, MemoryConnection]:
    a_send, b_recv = anyio.create_memory_object_stream[str](buffer)
    b_send, a_recv = anyio.create_memory_object_stream[str](buffer)
    peer = PeerInfo("inprocess", "inprocess", same_host=True)
    return MemoryConnection(a_send, a_recv, peer), MemoryConnection(b_send, b_recv, peer)


class InProcessTransport:
    name = "inprocess"

    def __init__(self, buffer: int = 1024) -> None:
        self.buffer = buffer

    async def connect(self, url: str, options: ClientOptions) -> Connection:
        name = url.removeprefix("inproc://")
        accept = _servers.get(name)
        if accept is None:
            raise ConnectionLost(f"no in-process server at {url!r}")
        client, server = _pair(self.buffer)
        try:
            await accept.send(server)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionLost(f"in-process server at {url!r} stopped") from None
        return client

    async def serve(
        self,
        handler: ConnectionHandler,
        options: ServerOptions,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        name = str(options.extra.get("name") or f"server-{next(_names)}")
        if name in _servers:
            raise InvalidRequest(f"in-process server {name!r} already running")
        send, receive = anyio.create_memory_object_stream[MemoryConnection](16)
        _servers[name] = send
        try:
            async with anyio.create_task_group() as tg:
                task_status.started(f"inproc://{name}")
                async with receive:
                    async for conn in receive:
                        tg.start_soon(_run, handler, conn)
        finally:
            _servers.pop(name, None)


async def _run(handler: ConnectionHandler, conn: MemoryConnection) -> None:
    try:
        await handler(conn)
    finally:
        await conn.aclose()
