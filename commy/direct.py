"""Requests from a thread without an event loop, on a blocking connection of its own.

The blocking client (`commy.sync`) runs the async client on a background event loop.
Handing each request to that loop and the answer back costs far more than the request
itself (FACTS.md: a thread → loop hand-off is ~250–500 µs here). So when the transport
offers a blocking connection (``Transport.connect_blocking``), the plain request/response
calls of the blocking client go over a second connection of their own instead: the
calling thread sends and then blocks in ``recv`` for the answer, as redis-py does.
Subscriptions, mirrors and events stay on the event loop's connection.

The request methods are the async client's own (same arguments, same replies, same
errors), run to completion without an event loop: they await nothing but `_request`,
which here completes synchronously, so their coroutines finish on the first step.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from commy import protocol
from commy.client import Client
from commy.errors import ConnectionLost, InternalError, Timeout, error_for_code
from commy.transports.base import BlockingConnection
from commy.vartypes import VarType

log = logging.getLogger(__name__)


def run_without_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (see the module doc) and return its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise InternalError("a direct request tried to wait for the event loop")


class DirectRequests:
    """The async client's request methods over a `BlockingConnection`; thread-safe."""

    def __init__(
        self,
        connect: Callable[[], BlockingConnection],
        *,
        tenant: str,
        auth_fields: dict[str, Any] | None,
        timeout: float,
    ) -> None:
        self.tenant = tenant
        self._connect = connect
        #: what `Authenticate` sends on each (re)connect; None: stay unauthenticated
        self.auth_fields = auth_fields
        self._timeout = timeout
        self._conn: BlockingConnection | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str], dict[str, VarType]] = {}
        self._closed = False

    # The async client's methods, borrowed as they are: they use only `request`, `_t`,
    # `_types` and each other.
    request = Client.request
    _t = Client._t
    _remember = Client._remember
    _type_of = Client._type_of
    create_tenant = Client.create_tenant
    delete_tenant = Client.delete_tenant
    list_tenants = Client.list_tenants
    create_service = Client.create_service
    get_service = Client.get_service
    delete_service = Client.delete_service
    list_services = Client.list_services
    read_service = Client.read_service
    allocate_variable = Client.allocate_variable
    deallocate_variable = Client.deallocate_variable
    read_variable = Client.read_variable
    write_variable = Client.write_variable
    report_variable_changes = Client.report_variable_changes

    async def heartbeat(self) -> float:
        import time

        start = time.monotonic()
        await self.request("Heartbeat")
        return time.monotonic() - start

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``direct.call("read_variable", "svc", "x")``: one blocking call of that method."""
        with self._lock:
            return run_without_loop(getattr(self, name)(*args, **kwargs))

    # ------------------------------------------------------------------ the wire
    async def _request(self, type: str, fields: dict[str, Any], internal: bool = False) -> dict[str, Any]:
        return self._exchange({"type": type, **fields})

    def _exchange(self, msg: dict[str, Any]) -> dict[str, Any]:
        conn = self._connection()
        mid = next(self._ids)
        try:
            conn.send(protocol.encode({**msg, "id": mid}))
            return self._answer(conn, mid, msg["type"])
        except ConnectionLost as exc:
            self._conn = None
            raise ConnectionLost(
                f"connection to the server lost before the answer came ({exc}); "
                "the request may or may not have been applied: retry it"
            ) from None
        except Timeout:
            self._conn = None  # the connection dropped itself: a late answer must not pair up
            raise

    def _answer(self, conn: BlockingConnection, mid: int, what: str) -> dict[str, Any]:
        parts: dict[int, bytes] = {}
        while True:
            text = conn.receive(self._timeout)
            reply = protocol.decode(text, direction="response")
            if reply.get("id") != mid:
                continue  # nothing else is in flight here; a stray answer is dropped
            kind = reply["type"]
            if kind == "Error":
                raise error_for_code(reply["code"], reply["message"], **(reply.get("details") or {}))
            if kind != "ServiceSnapshot":
                return reply
            parts[reply["chunk"]] = protocol.b64decode(reply["data"])
            if len(parts) == reply["chunks"]:
                return {**reply, "data": b"".join(parts[i] for i in range(len(parts)))}

    def _connection(self) -> BlockingConnection:
        if self._closed:
            raise ConnectionLost("the client is closed")
        if self._conn is None:
            conn = self._connect()
            try:
                if self.auth_fields is not None:
                    conn.send(protocol.encode({"type": "Authenticate", "id": 0, **self.auth_fields}))
                    self._answer(conn, 0, "Authenticate")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def reset(self, auth_fields: dict[str, Any] | None) -> None:
        """New credentials (after ``authenticate`` or ``logout``): the next call reconnects."""
        with self._lock:
            self.auth_fields = auth_fields
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                try:
                    self._conn.send(protocol.encode({"type": "Disconnect", "id": next(self._ids)}))
                except ConnectionLost:
                    pass
                self._conn.close()
                self._conn = None
