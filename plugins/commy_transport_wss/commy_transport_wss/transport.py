"""The two transports this plugin registers; both serve with the same server.

``wss``: httpx-ws client. ``wss-lean``: the lean client (`client_lean`). A server
started through either accepts clients of both, and any RFC 6455 client. Both offer the
same blocking client (`client_blocking`) to the blocking SDK.
"""

from __future__ import annotations

from typing import Any

import anyio

from commy.transports.base import (
    BlockingConnection,
    ClientOptions,
    Connection,
    ConnectionHandler,
    ServerOptions,
)


class WssTransport:
    name = "wss"

    async def connect(self, url: str, options: ClientOptions) -> Connection:
        from commy_transport_wss.client_httpx import connect

        return await connect(url, options, transport=self.name)

    def connect_blocking(self, url: str, options: ClientOptions) -> BlockingConnection:
        """A blocking connection for callers without an event loop (the same for both names)."""
        from commy_transport_wss.client_blocking import connect_blocking

        return connect_blocking(url, options, transport=self.name)

    async def serve(
        self,
        handler: ConnectionHandler,
        options: ServerOptions,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        from commy_transport_wss.server import serve

        await serve(handler, options, transport=self.name, task_status=task_status)


class LeanWssTransport(WssTransport):
    name = "wss-lean"

    async def connect(self, url: str, options: ClientOptions) -> Connection:
        from commy_transport_wss.client_lean import connect

        return await connect(url, options, transport=self.name)
