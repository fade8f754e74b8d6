"""The ``wss`` client: httpx-ws (the product owner's choice of WebSocket client).

httpx-ws keeps a background reader task inside its ``aconnect_ws`` context, i.e. a task
group that must be left by the task that entered it, in strict nesting with that task's
other cancel scopes. A connection returned from ``connect()`` and closed much later
(inside the caller's own scopes, e.g. a shielded ``finally``) cannot promise that, so a
small detached host task owns the context and the caller's task only sends and
receives. Errors escaping httpx-ws arrive wrapped in ``ExceptionGroup``s; they are
unwrapped into `ConnectionLost` here.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import httpx
import httpx_ws
import sniffio
from httpx_ws import aconnect_ws

from commy.errors import CommyError, ConnectionLost, Timeout
from commy.transports.base import ClientOptions, PeerInfo
from commy_transport_wss._common import NETWORK_ERRORS, is_loopback, log, parse_url

_WS_ERRORS = (
    httpx_ws.WebSocketDisconnect,
    httpx_ws.WebSocketNetworkError,
    httpx_ws.WebSocketUpgradeError,
    httpx_ws.WebSocketInvalidTypeReceived,
    httpx.TransportError,
    *NETWORK_ERRORS,
)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def _translate(exc: BaseException, url: str) -> CommyError:
    """One commy error for whatever httpx/httpx-ws/anyio raised (groups included)."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, CommyError):
            return leaf
    leaf = leaves[0] if leaves else exc
    if isinstance(leaf, httpx.TimeoutException | TimeoutError):
        return Timeout(f"connecting to {url} timed out")
    if isinstance(leaf, httpx_ws.WebSocketDisconnect):
        return ConnectionLost(
            f"server closed the connection (code {leaf.code}{': ' + leaf.reason if leaf.reason else ''})",
            close_code=leaf.code,
        )
    if isinstance(leaf, httpx_ws.WebSocketUpgradeError):
        return ConnectionLost(f"WebSocket upgrade to {url} refused: HTTP {leaf.response.status_code}")
    return ConnectionLost(f"connection to {url} lost: {leaf!r}")


class HttpxWsConnection:
    """One httpx-ws session, held open by a detached host task (see `connect`)."""

    def __init__(self, url: str, peer: PeerInfo) -> None:
        self._url = url
        self.peer = peer
        self._ws: Any = None
        self._lost: CommyError | None = None
        self._closed = False
        self._ready = anyio.Event()
        self._done = anyio.Event()
        self._finished = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._error: BaseException | None = None

    async def _host(self, client_kwargs: dict[str, Any], ws_kwargs: dict[str, Any]) -> None:
        """Own httpx-ws's context (its task group) from start to end in one task.

        Everything is caught: on trio this is a system task, whose exception would crash
        the whole run.
        """
        try:
            with anyio.CancelScope() as self._scope:
                async with (
                    httpx.AsyncClient(**client_kwargs) as client,
                    aconnect_ws(self._url, client, **ws_kwargs) as ws,
                ):
                    self._ws = ws
                    self._ready.set()
                    await self._done.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, see above
            if self._ws is None:
                self._error = exc
            else:
                log.debug("httpx-ws session to %s ended: %r", self._url, exc)
        finally:
            self._ready.set()
            self._finished.set()

    async def send(self, message: str) -> None:
        if self._lost is not None:
            raise self._lost
        try:
            await self._ws.send_text(message)
        except (*_WS_ERRORS, BaseExceptionGroup) as exc:
            self._lost = _translate(exc, self._url)
            raise self._lost from None

    async def receive(self) -> str:
        if self._lost is not None:
            raise self._lost
        try:
            return await self._ws.receive_text()
        except (*_WS_ERRORS, BaseExceptionGroup) as exc:
            self._lost = _translate(exc, self._url)
            raise self._lost from None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._lost is None:
            self._lost = ConnectionLost("connection closed")
        self._done.set()  # the host leaves httpx-ws's context: close frame, TCP close
        with anyio.move_on_after(5, shield=True) as scope:
            await self._finished.wait()
        if scope.cancelled_caught and self._scope is not None:
            self._scope.cancel()


def _spawn_detached(fn: Any, *args: Any) -> None:
    """Start a task that belongs to no task group of the caller.

    anyio has no portable call for this; the two backends each have one. A detached
    host lets the caller open and close the connection from any task and inside any
    cancel scopes (a task group entered in connect() and left in aclose() would have to
    nest exactly with the caller's scopes, which real callers do not guarantee).
    """
    if sniffio.current_async_library() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(fn, *args)
    else:
        import asyncio

        task = asyncio.get_running_loop().create_task(fn(*args))
        _HOSTS.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_HOSTS.discard)


_HOSTS: set[Any] = set()


async def connect(url: str, options: ClientOptions, *, transport: str = "wss") -> HttpxWsConnection:
    target = parse_url(url)
    verify: Any = options.ssl_context if options.ssl_context is not None else True
    if not target.tls:
        verify = False
    # TCP_NODELAY explicitly: a request/response protocol otherwise stalls ~44 ms per
    # round trip on delayed ACKs wherever the backend leaves Nagle on.
    http_transport = httpx.AsyncHTTPTransport(
        verify=verify, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    )
    client_kwargs = {"transport": http_transport, "verify": verify, "timeout": options.connect_timeout}
    ws_kwargs = {
        # a read-chunk size in httpx-ws, not a limit: big chunks keep its quadratic
        # `bytes +=` joining of partial frames short
        "max_message_size_bytes": max(options.max_message_size, 1 << 16),
        "keepalive_ping_interval_seconds": options.extra.get("ping_interval", 20.0),
    }
    peer = PeerInfo(
        transport=transport,
        remote_address=target.netloc,
        tls=target.tls,
        same_host=is_loopback(target.host),
    )
    conn = HttpxWsConnection(url, peer)
    _spawn_detached(conn._host, client_kwargs, ws_kwargs)
    try:
        with anyio.fail_after(options.connect_timeout):
            await conn._ready.wait()
    except BaseException as exc:  # timeout or the caller's cancellation: stop the host
        if conn._scope is not None:
            conn._scope.cancel()
        conn._done.set()
        if isinstance(exc, TimeoutError):
            raise Timeout(f"connecting to {url} timed out") from None
        raise
    if conn._ws is None:
        raise _translate(conn._error or ConnectionLost(f"cannot connect to {url}"), url) from None
    return conn
