"""The client SDK: one connection to a commy server, the same API for local and remote.

    async with commy.connect("wss://host:8765", tenant="acme", api_key=key) as client:
        await client.create_service("sensors")
        await client.allocate_variable("sensors", "temp", "f64")
        vf = await client.get_virtual_service_file("sensors")
        vf.write("temp", 21.5)          # local: straight into the mapping
        print(vf.read("temp"), vf.is_local)

A task waiting for a reply reads the connection itself when nobody else is ("the
leader reads") and dispatches responses by request id and pushes to subscriptions, so
any number of requests may be in flight at once; a background task reads only when
pushes or fire-and-forget replies may arrive and no request is reading. A second task
sends the queued writes of remote mirrors in order. A lost connection is re-established
with backoff (requests in flight raise `ConnectionLost`, which may be retried) and
subscriptions resume from their last sequence number (docs/protocol.md, Resume).

A remote mirror's ``vf.write`` queues the write without waiting; call it from the event
loop's thread (the queue is an anyio stream). ``await vf.awrite(...)`` waits for the
server and raises its error; errors of queued writes are logged and kept in
``client.write_errors``.
"""

from __future__ import annotations

import collections
import hmac
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs

from commy import fileformat as ff
from commy import protocol
from commy.accessors.remote import RemoteBufferAccessor
from commy.config import Config, load_config
from commy.errors import (
    CommyError,
    ConnectionLost,
    FileError,
    InvalidRequest,
    LimitExceeded,
    Timeout,
    error_for_code,
)
from commy.transports.base import ClientOptions, Connection
from commy.vartypes import VarType, parse_type
from commy.virtual_file import VariableInfo, VirtualServiceFile

log = logging.getLogger(__name__)

#: Writes of remote mirrors waiting to be sent; a full queue raises LimitExceeded.
WRITE_QUEUE = 10_000
#: Updates a subscription keeps apart for a consumer that is behind; past that they merge.
UPDATE_BUFFER = 1024
SCHEMES = {"inproc": "inprocess"}
#: reconnect backoff: the n-th try waits uniform(0, min(MAX, MIN * 2**n)) seconds
RECONNECT_MIN_DELAY = 0.05
RECONNECT_MAX_DELAY = 2.0
#: longest a close may take before the connection is just dropped
CLOSE_TIMEOUT = 5.0


@attrs.frozen
class ServiceInfo:
    tenant: str
    name: str
    service_id: str
    ephemeral: bool
    seq: int
    layout: int
    variables: dict[str, VariableInfo]


@attrs.frozen
class ServiceUpdate:
    """One ``VariablesUpdated`` push, values decoded."""

    tenant: str
    service: str
    seq: int
    layout: int
    values: dict[str, Any]
    versions: dict[str, int]


class _Call:
    __slots__ = (
        "finished", "waiting", "event", "reply", "error", "parts", "size", "fire_and_forget",
        "deadline", "what",
    )

    def __init__(self, fire_and_forget: bool = False) -> None:
        self.finished = False
        #: `time.monotonic()` after which the watchdog fails the call with `Timeout`
        #: (None: not timed, e.g. fire-and-forget writes or a call not yet waited for)
        self.deadline: float | None = None
        self.what = ""
        #: a task waits on `event` for its reply or for its turn to read (see _until_done);
        #: created only then: the task that reads its own reply needs none
        self.waiting = False
        self.event: anyio.Event | None = None
        self.reply: dict[str, Any] | None = None
        self.error: CommyError | None = None
        self.parts: dict[int, bytes] = {}
        self.size = 0
        self.fire_and_forget = fire_and_forget

    def finish(self) -> None:
        self.finished = True
        if self.event is not None:
            self.event.set()


class _Mirror:
    """A remote VirtualServiceFile and the state that keeps it current."""

    def __init__(self, client: Client, tenant: str, service: str, readonly: bool) -> None:
        self.client = client
        self.tenant = tenant
        self.service = service
        self.vf: VirtualServiceFile | None = None
        self.busy = True  # loading a snapshot: pushes wait in the backlog
        self.backlog: list[dict[str, Any]] = []
        self.acc = RemoteBufferAccessor(
            readonly=readonly,
            on_write=None if readonly else self._write,
            on_awrite=None if readonly else self._awrite,
        )

    def _wire(self, name: str, value: Any) -> Any:
        assert self.vf is not None
        return protocol.value_to_wire(self.vf.type_of(name), value)

    def _write(self, name: str, value: Any) -> None:
        self.client._queue_write(self.tenant, self.service, name, self._wire(name, value), None)

    async def _awrite(self, name: str, value: Any) -> None:
        call = _Call()
        self.client._queue_write(self.tenant, self.service, name, self._wire(name, value), call)
        await self.client._wait(call, "WriteVariable")

    def on_push(self, msg: dict[str, Any]) -> None:
        if self.busy:
            self.backlog.append(msg)
        elif not self._apply(msg):
            self.client._spawn(self.resync)

    def _apply(self, msg: dict[str, Any]) -> bool:
        acc = self.acc
        if msg["layout"] != acc.layout_generation:
            return msg["seq"] <= acc.server_seq and msg["layout"] < acc.layout_generation
        entries = acc._entry_map()
        changes = []
        try:
            for v in msg["variables"]:
                e = entries.get(v["name"])
                if e is None:
                    return False
                changes.append((v["name"], v["version"], protocol.value_from_wire(e.vtype, v["name"], v["value"])))
            old_seq = acc.server_seq
            if not acc.apply_update(msg["seq"], msg["layout"], changes):
                return False
        except CommyError as exc:
            log.warning("push for %s/%s not applicable (%s); resyncing", self.tenant, self.service, exc)
            return False
        if acc.server_seq != old_seq:  # a stale push changed nothing: no event
            self._announce(tuple(c[0] for c in changes), old_seq)
        return True

    def _announce(self, names: tuple[str, ...], old_seq: int) -> None:
        # Only when someone asked for events (the hub exists): a mirror nobody watches
        # must not queue events forever.
        vf = self.vf
        if vf is not None and vf._hub is not None and names:
            from commy.events import FileChangeEvent

            vf._hub.publish(FileChangeEvent(
                vf.service_id, names, old_seq, self.acc.server_seq, source="remote", service=self.service,
            ))

    async def load(self) -> None:
        data = await self.client.read_service(self.service, tenant=self.tenant)
        before = _versions(self.vf) if self.vf is not None else None
        old_seq = self.acc.server_seq
        self.acc.replace(data)
        if self.vf is None:
            self.vf = VirtualServiceFile(self.acc)
        else:
            self.vf.refresh()
            # A resync is a change too: name what moved so event consumers miss nothing.
            after = _versions(self.vf)
            self._announce(tuple(n for n, v in after.items() if before.get(n) != v), old_seq)
        self._drain()

    def _drain(self) -> None:
        backlog, self.backlog = self.backlog, []
        self.busy = False
        for msg in backlog:
            if not self._apply(msg):
                self.client._spawn(self.resync)
                return

    async def resync(self) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            await self.load()
        except CommyError as exc:
            self.busy = False
            log.warning("resync of %s/%s failed: %s", self.tenant, self.service, exc)


class _Listener:
    """Pushed updates waiting for one ``subscribe()`` consumer; never loses a change.

    Up to ``limit`` updates wait as they came. Past that, each new update is merged into
    the newest waiting one (latest value and version of each variable, the newer
    sequence number), like the server's own coalescing for slow clients: a consumer
    that falls behind gets fewer, fuller updates, and memory stays bounded.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.wake: anyio.Event | None = None
        self.closed = False
        #: updates merged into an earlier one because the consumer was behind
        self.coalesced = 0

    def offer(self, msg: dict[str, Any]) -> None:
        if self.closed:
            return
        if len(self.queue) < self.limit:
            self.queue.append(msg)
        else:
            last = self.queue[-1]
            merged = {v["name"]: v for v in last["variables"]}
            merged.update((v["name"], v) for v in msg["variables"])
            self.queue[-1] = {**msg, "variables": list(merged.values())}
            self.coalesced += 1
        if self.wake is not None:
            self.wake.set()

    async def next(self) -> dict[str, Any] | None:
        """The next update; None once closed."""
        while not self.queue:
            if self.closed:
                return None
            self.wake = anyio.Event()
            await self.wake.wait()
            self.wake = None
        return self.queue.popleft()

    def close(self) -> None:
        self.closed = True
        if self.wake is not None:
            self.wake.set()


class _Subscription:
    def __init__(self) -> None:
        self.refs = 0
        self.mirrors: list[_Mirror] = []
        self.listeners: list[_Listener] = []
        #: the highest change sequence number seen; a resubscription resumes after it
        self.seq = 0


class Client:
    """A connection to a commy server; create it with `connect`."""

    def __init__(
        self, conn: Connection, *, tenant: str, config: Config, locality: str, reconnect: bool = True
    ) -> None:
        if locality not in ("auto", "local", "remote"):
            raise InvalidRequest(f"locality must be auto, local or remote, got {locality!r}")
        self.tenant = tenant
        self.locality = locality
        self.config = config
        self.principal: str | None = None
        self.roles: list[str] = []
        self._conn = conn
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._reading = False  # a task (or the background reader) is reading the connection
        #: the call whose task is reading right now, and that task's cancel scope: the
        #: watchdog cancels the read when that call times out
        self._leader_call: _Call | None = None
        self._leader_scope: anyio.CancelScope | None = None
        self._bg_wake = anyio.Event()
        self._orphans = 0  # fire-and-forget calls in flight: their replies need a reader
        self._online = anyio.Event()  # unset while reconnecting
        self._online.set()
        self._reconnect = reconnect
        #: opens a new connection (set by `connect`); None: no reconnecting
        self._connector: Callable[[], Awaitable[Connection]] | None = None
        self._lost_conn: Connection | None = None
        self._auth_fields: dict[str, Any] = {}
        self._closing = False
        #: how often the connection was re-established
        self.reconnects = 0
        self._timeout = config.client.timeout
        self._max_size = protocol.MAX_MESSAGE_SIZE
        self._subs: dict[tuple[str, str], _Subscription] = {}
        self._types: dict[tuple[str, str], dict[str, VarType]] = {}
        self._writes_in, self._writes_out = anyio.create_memory_object_stream[tuple[dict[str, Any], _Call]](
            WRITE_QUEUE
        )
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        #: errors of fire-and-forget writes (``vf.write`` on a remote service), newest last
        self.write_errors: list[CommyError] = []
        self._transport: Any = None
        self._url = ""
        self._options: ClientOptions | None = None

    # ------------------------------------------------------------------ plumbing
    #
    # Reading the connection: "the leader reads". A task waiting for its reply reads the
    # connection itself when nobody else is, and dispatches whatever arrives (other
    # tasks' replies, pushes) until its own reply is there; then it hands the reading
    # to another waiting task, or to the background reader when pushes or
    # fire-and-forget replies are expected. A hand-off through a background task costs
    # more than the request (FACTS.md, Transport), so the common case has none.
    @property
    def closed(self) -> bool:
        return self._closed

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._tg is not None and not self._closed:
            self._tg.start_soon(fn, *args)

    async def _wait_online(self) -> None:
        """Wait (up to ``client.timeout``) while a lost connection is being re-established."""
        if not self._online.is_set():
            with anyio.move_on_after(self._timeout):
                await self._online.wait()
        if self._closed:
            raise ConnectionLost("the client is closed")
        if not self._online.is_set():
            raise ConnectionLost(f"not reconnected to the server within {self._timeout} s")

    async def _send(self, msg: dict[str, Any], internal: bool = False) -> None:
        if not internal and not self._online.is_set():
            await self._wait_online()
        if self._closed:
            raise ConnectionLost("the client is closed")
        text = protocol.encode(msg)
        conn = self._conn
        try:
            await conn.send(text)  # the transport contract: concurrent sends are safe
        except ConnectionLost as exc:
            self._on_lost(conn, exc)
            raise

    async def _read_one(self) -> None:
        """Receive one message and dispatch it (a reply to its call, a push to subscribers)."""
        conn = self._conn
        try:
            text = await conn.receive()
        except ConnectionLost as exc:
            self._on_lost(conn, exc)
            return
        try:
            msg = protocol.decode(text, max_size=self._max_size, direction="response")
        except CommyError as exc:
            log.warning("dropping a malformed message from the server: %s", exc)
            return
        mid = msg.get("id")
        if mid is None:
            self._on_push(msg)
            return
        call = self._calls.get(mid)
        if call is not None:
            self._on_reply(mid, call, msg)

    async def _watchdog(self) -> None:
        """Fail calls whose answer is overdue with `Timeout` (within a quarter of the timeout)."""
        tick = min(max(self._timeout / 4, 0.01), 1.0)
        while not self._closed:
            await anyio.sleep(tick)
            now = time.monotonic()
            overdue = [
                (mid, call) for mid, call in self._calls.items()
                if call.deadline is not None and call.deadline <= now and not call.finished
            ]
            for mid, call in overdue:
                self._calls.pop(mid, None)
                call.error = Timeout(f"{call.what}: no answer within {self._timeout} s")
                call.finish()
                if call is self._leader_call and self._leader_scope is not None:
                    self._leader_scope.cancel()

    def _bg_needed(self) -> bool:
        return bool(self._subs or self._orphans) and self._online.is_set() and not self._closed

    async def _background_reader(self) -> None:
        """Reads only while nobody else does and something may arrive that no task awaits."""
        while not self._closed:
            if self._reading or not self._bg_needed():
                await self._bg_wake.wait()
                self._bg_wake = anyio.Event()
                continue
            self._reading = True
            try:
                while self._bg_needed():
                    await self._read_one()
            finally:
                self._reading = False
                self._handoff()

    def _handoff(self) -> None:
        """The reader stopped: wake one task still waiting for a reply, else the background reader."""
        for call in self._calls.values():
            if call.waiting and not call.finished:
                assert call.event is not None
                call.event.set()
                return
        if self._bg_needed():
            self._bg_wake.set()

    async def _until_done(self, call: _Call) -> None:
        while not call.finished:
            if self._reading:
                call.event = anyio.Event()
                call.waiting = True
                try:
                    await call.event.wait()
                finally:
                    call.waiting = False
                continue
            self._reading = True
            self._leader_call = call
            try:
                with anyio.CancelScope() as self._leader_scope:
                    while not call.finished:
                        await self._read_one()
            finally:
                self._reading = False
                self._leader_call = self._leader_scope = None
                self._handoff()

    def _on_lost(self, conn: Connection, exc: CommyError) -> None:
        """The connection died: fail what was in flight, then reconnect (or close)."""
        if conn is not self._conn or conn is self._lost_conn:
            return  # a connection already given up, or one since replaced
        self._lost_conn = conn
        if not self._closing:
            log.warning("connection to the server lost: %s", exc)
        error = ConnectionLost(
            f"connection to the server lost before the answer came ({exc}); "
            "the request may or may not have been applied: retry it"
        )
        calls, self._calls = self._calls, {}
        self._orphans = 0
        for call in calls.values():
            if call.fire_and_forget:
                self._record_write_error(error)
            call.error = error
            call.finish()
        if self._closing or self._connector is None or not self._reconnect:
            self._closed = True
            self._online.set()  # wake waiters: they see the client closed
        elif self._online.is_set():
            self._online = anyio.Event()
            self._spawn(self._reconnect_loop, conn)
        self._bg_wake.set()

    async def _reconnect_loop(self, old: Connection) -> None:
        """Reconnect with exponential backoff and full jitter, re-authenticate, resubscribe."""
        await self._close_connection(old)
        delay = RECONNECT_MIN_DELAY
        while not self._closing:
            await anyio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, RECONNECT_MAX_DELAY)
            assert self._connector is not None
            try:
                conn = await self._connector()
            except CommyError as exc:
                log.info("reconnecting failed: %s (next try within %.2f s)", exc, delay)
                continue
            self._conn = conn
            try:
                await self._resume_session()
            except (ConnectionLost, Timeout) as exc:
                log.info("reconnected session failed: %s", exc)
                await self._close_connection(conn)
                continue
            except CommyError as exc:  # e.g. the key was revoked: retrying cannot help
                log.error("giving up reconnecting: %s", exc)
                self._closed = True
                self._online.set()
                await self._close_connection(conn)
                return
            self.reconnects += 1
            log.info("reconnected to the server (reconnect #%d)", self.reconnects)
            self._online.set()
            self._bg_wake.set()
            return

    async def _resume_session(self) -> None:
        await self._request("Authenticate", self._auth_fields, internal=True)
        for (tenant, service), sub in list(self._subs.items()):
            try:
                reply = await self._request(
                    "Subscribe", {"tenant": tenant, "service": service, "since": sub.seq}, internal=True
                )
            except (ConnectionLost, Timeout):
                raise
            except CommyError as exc:
                log.warning("resubscribing to %s/%s failed: %s", tenant, service, exc)
                continue
            if reply.get("resume") == "snapshot":
                # The server no longer holds every change since sub.seq (or restarted
                # from an older file): it pushes all current values; mirrors take a
                # whole new snapshot as well so nothing stale survives.
                for mirror in sub.mirrors:
                    mirror.busy = False
                    self._spawn(mirror.resync)

    def _record_write_error(self, error: CommyError) -> None:
        log.warning("write failed: %s", error)
        self.write_errors = [*self.write_errors[-99:], error]

    def _on_reply(self, mid: int, call: _Call, msg: dict[str, Any]) -> None:
        if msg["type"] == "Error":
            call.error = error_for_code(msg["code"], msg["message"], **(msg.get("details") or {}))
        elif msg["type"] == "ServiceSnapshot":
            call.parts[msg["chunk"]] = protocol.b64decode(msg["data"])
            call.size = msg["size"]
            if len(call.parts) < msg["chunks"]:
                return
            call.reply = msg
        else:
            call.reply = msg
        self._calls.pop(mid, None)
        if call.fire_and_forget:
            self._orphans -= 1
            if call.error is not None:
                self._record_write_error(call.error)
            return
        call.finish()

    def _on_push(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "VariablesUpdated":
            if msg["type"] == "SubscriptionClosed":
                self._on_subscription_closed(msg)
            return
        sub = self._subs.get((msg["tenant"], msg["service"]))
        if sub is None:
            return
        if msg["seq"] > sub.seq:
            sub.seq = msg["seq"]  # where a resume after a reconnect starts
        for mirror in sub.mirrors:
            mirror.on_push(msg)
        for listener in sub.listeners:
            listener.offer(msg)

    async def _writer(self) -> None:
        async with self._writes_out:
            async for msg, call in self._writes_out:
                mid = next(self._ids)
                self._calls[mid] = call
                if call.fire_and_forget:
                    self._orphans += 1
                    self._bg_wake.set()  # its reply needs a reader even if nobody waits
                try:
                    await self._send({**msg, "id": mid})
                except ConnectionLost as exc:
                    if self._calls.pop(mid, None) is not None and call.fire_and_forget:
                        self._orphans -= 1
                        self._record_write_error(exc)
                    call.error = exc
                    call.finish()

    def _queue_write(self, tenant: str, service: str, name: str, wire: Any, call: _Call | None) -> None:
        msg = {"type": "WriteVariable", "tenant": tenant, "service": service, "name": name, "value": wire}
        if self._closed:
            raise ConnectionLost("the client is closed")
        try:
            self._writes_in.send_nowait((msg, call or _Call(fire_and_forget=True)))
        except anyio.WouldBlock:
            raise LimitExceeded(f"more than {WRITE_QUEUE} writes are waiting to be sent") from None

    async def flush(self) -> None:
        """Wait until the server has applied every remote-mirror write queued before this call.

        The writes travel in order on one connection and the server applies a
        connection's writes in order, so one Heartbeat sent after them and answered means
        they are all done. Refused writes do not raise here: see ``write_errors``.
        """
        if self._closed:
            raise ConnectionLost("the client is closed")
        call = _Call()
        await self._writes_in.send(({"type": "Heartbeat"}, call))
        await self._wait(call, "flush")

    async def _wait(self, call: _Call, what: str) -> dict[str, Any]:
        # Timed by `_watchdog`, not by a timeout scope per call: a scope with a deadline
        # schedules and cancels a loop timer per request, a measurable share of a
        # ~200 µs round trip.
        if not call.finished:
            call.what = what
            call.deadline = time.monotonic() + self._timeout
            await self._until_done(call)
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    async def _request(self, type: str, fields: dict[str, Any], internal: bool = False) -> dict[str, Any]:
        if not internal and not self._online.is_set():
            await self._wait_online()
        mid = next(self._ids)
        call = _Call()
        self._calls[mid] = call
        try:
            await self._send({"type": type, "id": mid, **fields}, internal)
            reply = await self._wait(call, type)
        finally:
            self._calls.pop(mid, None)
        if type == "ReadService":
            reply = {**reply, "data": b"".join(call.parts[i] for i in range(len(call.parts)))}
        return reply

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply; the server's errors raise as their class.

        `ConnectionLost` when the connection broke before the answer came: the request
        may or may not have been applied; the client reconnects by itself (unless
        ``reconnect`` is off), so the application may retry.
        """
        return await self._request(type, fields)

    async def aclose(self) -> None:
        """Say goodbye and stop the background tasks (idempotent).

        The connection itself is closed by `connect` after its task group has ended:
        a transport may have entered cancel scopes in ``connect()`` that must be left
        in the same order.
        """
        self._closing = True
        if not self._closed and self._online.is_set():
            with anyio.move_on_after(1, shield=True):
                try:
                    await self.request("Disconnect")
                except CommyError:
                    pass
        self._closed = True
        self._online.set()
        self._bg_wake.set()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _close_connection(self, conn: Connection | None = None) -> None:
        # Bounded and shielded: closing runs in finally blocks of cancelled scopes and must
        # neither be cancelled half-way nor hang on a dead peer. Transports keep their own
        # cancel scopes off the caller's task (httpx-ws runs in a detached host task), so
        # nothing cancelled is left behind on this one.
        conn = self._conn if conn is None else conn
        with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
            try:
                await conn.aclose()
            except Exception:  # already broken: nothing left to close
                log.debug("closing the connection failed", exc_info=True)

    def _t(self, tenant: str | None) -> str:
        return self.tenant if tenant is None else tenant

    # ------------------------------------------------------------------ session
    async def authenticate(self, api_key: str | None = None, **credentials: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"tenant": self.tenant}
        if api_key is not None:
            fields["api_key"] = api_key
        if credentials:
            fields["credentials"] = credentials
        reply = await self.request("Authenticate", **fields)
        self._auth_fields = fields  # to authenticate again after a reconnect
        self.principal = reply["principal"]
        self.roles = reply["roles"]
        return reply

    async def heartbeat(self) -> float:
        """Round-trip time of one Heartbeat in seconds."""
        start = anyio.current_time()
        await self.request("Heartbeat")
        return anyio.current_time() - start

    # ------------------------------------------------------------------ tenants
    async def create_tenant(self, name: str) -> None:
        await self.request("CreateTenant", name=name)

    async def delete_tenant(self, name: str) -> None:
        await self.request("DeleteTenant", name=name)

    async def list_tenants(self) -> list[str]:
        return (await self.request("ListTenants"))["tenants"]

    # ------------------------------------------------------------------ administration
    # Grants, roles and API keys of a tenant (tenant admin; server admin for any tenant).
    async def logout(self) -> None:
        """End this connection's authentication; its subscriptions end on the server."""
        await self.request("Logout")
        self.principal = None
        self.roles = []

    async def grant(
        self,
        principal: str,
        service: str | None = None,
        permission: str | None = None,
        *,
        role: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """Grant ``permission`` (read/write/admin) on ``service`` (a name or glob), or a role."""
        fields: dict[str, Any] = {"tenant": self._t(tenant), "principal": principal}
        for k, v in (("service", service), ("permission", permission), ("role", role)):
            if v is not None:
                fields[k] = v
        await self.request("Grant", **fields)

    async def revoke(
        self, principal: str, service: str | None = None, *, role: str | None = None, tenant: str | None = None
    ) -> None:
        """Remove the grant on ``service`` (exactly as granted), or a role; live sessions follow."""
        fields: dict[str, Any] = {"tenant": self._t(tenant), "principal": principal}
        if service is not None:
            fields["service"] = service
        if role is not None:
            fields["role"] = role
        await self.request("Revoke", **fields)

    async def list_grants(self, principal: str | None = None, *, tenant: str | None = None) -> list[dict[str, str]]:
        fields: dict[str, Any] = {"tenant": self._t(tenant)}
        if principal is not None:
            fields["principal"] = principal
        return (await self.request("ListGrants", **fields))["grants"]

    async def create_api_key(
        self,
        principal: str,
        *,
        roles: list[str] | tuple[str, ...] = (),
        grants: dict[str, str] | None = None,
        description: str = "",
        tenant: str | None = None,
        server_wide: bool = False,
    ) -> dict[str, Any]:
        """A new key: ``{"key", "key_id", "principal", "tenant"}``; the key is shown only now."""
        fields: dict[str, Any] = {"principal": principal, "description": description}
        if server_wide:
            fields["server_wide"] = True
        else:
            fields["tenant"] = self._t(tenant)
        if roles:
            fields["roles"] = list(roles)
        if grants:
            fields["grants"] = dict(grants)
        reply = await self.request("CreateApiKey", **fields)
        return {k: reply.get(k) for k in ("key", "key_id", "principal", "tenant")}

    async def revoke_api_key(self, key_id: str) -> None:
        await self.request("RevokeApiKey", key_id=key_id)

    async def list_api_keys(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        fields = {} if tenant is None else {"tenant": tenant}
        return (await self.request("ListApiKeys", **fields))["keys"]

    def _on_subscription_closed(self, msg: dict[str, Any]) -> None:
        """The server ended a subscription (permission or key revoked): end its streams."""
        key = (msg["tenant"], msg["service"])
        log.warning("server closed the subscription to %s/%s: [%s] %s", *key, msg["code"], msg["message"])
        sub = self._subs.pop(key, None)
        if sub is not None:
            for listener in sub.listeners:
                listener.close()

    # ------------------------------------------------------------------ services
    def _remember(self, reply: dict[str, Any]) -> ServiceInfo:
        variables = {v["name"]: VariableInfo(**v) for v in reply["variables"]}
        key = (reply["tenant"], reply["service"])
        self._types[key] = {n: parse_type(v.type) for n, v in variables.items()}
        return ServiceInfo(
            reply["tenant"], reply["service"], reply["service_id"], reply["ephemeral"],
            reply["seq"], reply["layout"], variables,
        )

    async def create_service(self, name: str, ephemeral: bool = False, *, tenant: str | None = None) -> ServiceInfo:
        reply = await self.request("CreateService", tenant=self._t(tenant), service=name, ephemeral=ephemeral)
        return self._remember(reply)

    async def get_service(self, name: str, *, tenant: str | None = None) -> ServiceInfo:
        return self._remember(await self.request("GetService", tenant=self._t(tenant), service=name))

    async def delete_service(self, name: str, *, tenant: str | None = None) -> None:
        await self.request("DeleteService", tenant=self._t(tenant), service=name)
        self._types.pop((self._t(tenant), name), None)

    async def list_services(self, *, tenant: str | None = None) -> list[str]:
        reply = await self.request("ListServices", tenant=self._t(tenant))
        return [s["name"] for s in reply["services"]]

    async def read_service(self, name: str, *, tenant: str | None = None) -> bytes:
        """A snapshot of the whole service file (arrives in ≤ 256 KiB chunks)."""
        reply = await self.request("ReadService", tenant=self._t(tenant), service=name)
        data = reply["data"]
        if len(data) != reply["size"]:
            raise InvalidRequest(f"snapshot of {name!r} arrived incomplete ({len(data)}/{reply['size']} bytes)")
        return data

    # ------------------------------------------------------------------ variables
    async def allocate_variable(
        self,
        service: str,
        name: str,
        type: str,
        persistent: bool = True,
        initial: Any = None,
        *,
        tenant: str | None = None,
    ) -> VariableInfo:
        vt = parse_type(type)
        fields: dict[str, Any] = {
            "tenant": self._t(tenant), "service": service, "name": name, "var_type": vt.spec,
            "persistent": persistent,
        }
        if initial is not None:
            fields["initial"] = protocol.value_to_wire(vt, initial)
        reply = await self.request("AllocateVariable", **fields)
        self._types.setdefault((self._t(tenant), service), {})[name] = vt
        return VariableInfo(**reply["variable"])

    async def deallocate_variable(self, service: str, name: str, *, tenant: str | None = None) -> None:
        await self.request("DeallocateVariable", tenant=self._t(tenant), service=service, name=name)
        self._types.get((self._t(tenant), service), {}).pop(name, None)

    async def _type_of(self, tenant: str, service: str, name: str) -> VarType:
        vt = self._types.get((tenant, service), {}).get(name)
        if vt is None:
            await self.get_service(service, tenant=tenant)
            vt = self._types.get((tenant, service), {}).get(name)
            if vt is None:
                from commy.errors import VariableNotFound

                raise VariableNotFound(f"no variable {name!r} in service {service!r}")
        return vt

    async def read_variable(self, service: str, name: str, *, tenant: str | None = None) -> Any:
        reply = await self.request("ReadVariable", tenant=self._t(tenant), service=service, name=name)
        vt = parse_type(reply["var_type"])
        return protocol.value_from_wire(vt, name, reply["value"])

    async def write_variable(self, service: str, name: str, value: Any, *, tenant: str | None = None) -> int:
        """Write through the server and wait for it; returns the variable's new version."""
        t = self._t(tenant)
        vt = await self._type_of(t, service, name)
        reply = await self.request(
            "WriteVariable", tenant=t, service=service, name=name, value=protocol.value_to_wire(vt, value)
        )
        return reply["version"]

    async def report_variable_changes(self, service: str, names: list[str], *, tenant: str | None = None) -> None:
        """Tell the server which variables a local writer changed (it pushes them, no diff)."""
        await self.request("ReportVariableChanges", tenant=self._t(tenant), service=service, names=list(names))

    # ------------------------------------------------------------------ subscriptions
    async def _subscribe(self, tenant: str, service: str) -> _Subscription:
        key = (tenant, service)
        sub = self._subs.get(key)
        if sub is None:
            sub = self._subs[key] = _Subscription()
            try:
                reply = await self.request("Subscribe", tenant=tenant, service=service)
            except BaseException:
                self._subs.pop(key, None)
                raise
            sub.seq = max(sub.seq, reply["seq"])
            self._bg_wake.set()  # pushes may now arrive while no request is reading
        sub.refs += 1
        return sub

    async def _unsubscribe(self, tenant: str, service: str) -> None:
        key = (tenant, service)
        sub = self._subs.get(key)
        if sub is None:
            return
        sub.refs -= 1
        if sub.refs <= 0:
            self._subs.pop(key, None)
            if not self._closed:
                try:
                    await self.request("Unsubscribe", tenant=tenant, service=service)
                except (ConnectionLost, Timeout):
                    pass

    @asynccontextmanager
    async def subscribe(self, service: str, *, tenant: str | None = None) -> AsyncIterator[AsyncIterator[ServiceUpdate]]:
        """``async with client.subscribe("svc") as updates: async for u in updates: ...``"""
        t = self._t(tenant)
        listener = _Listener(UPDATE_BUFFER)
        sub = await self._subscribe(t, service)
        sub.listeners.append(listener)
        try:
            yield self._updates(t, service, listener)
        finally:
            sub.listeners.remove(listener)
            listener.close()
            with anyio.CancelScope(shield=True):
                await self._unsubscribe(t, service)

    async def _updates(self, tenant: str, service: str, listener: _Listener) -> AsyncIterator[ServiceUpdate]:
        while True:
            msg = await listener.next()
            if msg is None:
                return
            values: dict[str, Any] = {}
            versions: dict[str, int] = {}
            for v in msg["variables"]:
                try:
                    vt = await self._type_of(tenant, service, v["name"])
                except CommyError:
                    continue  # deallocated meanwhile
                values[v["name"]] = protocol.value_from_wire(vt, v["name"], v["value"])
                versions[v["name"]] = v["version"]
            yield ServiceUpdate(tenant, service, msg["seq"], msg["layout"], values, versions)

    # ------------------------------------------------------------------ virtual files
    async def get_virtual_service_file(self, service: str, *, tenant: str | None = None) -> VirtualServiceFile:
        """The service as a `VirtualServiceFile`: mapped locally when the file is provably
        on this machine (``locality`` auto/local), otherwise a mirror kept current by the
        server. ``vf.is_local`` tells which."""
        t = self._t(tenant)
        info = await self.request("GetServiceFilePath", tenant=t, service=service)
        readonly = info.get("readonly", info["permission"] == "read")
        if self.locality != "remote":
            vf = _map_local(info, readonly)
            if vf is not None:
                return vf
            if self.locality == "local":
                raise FileError(
                    f"service {service!r} cannot be mapped locally (file not here or locality token mismatch)"
                )
        return await self._mirror(t, service, readonly)

    async def _mirror(self, tenant: str, service: str, readonly: bool) -> VirtualServiceFile:
        mirror = _Mirror(self, tenant, service, readonly)
        sub = await self._subscribe(tenant, service)
        sub.mirrors.append(mirror)  # before the snapshot: pushes from now on wait in the backlog
        try:
            await mirror.load()
        except BaseException:
            sub.mirrors.remove(mirror)
            with anyio.CancelScope(shield=True):
                await self._unsubscribe(tenant, service)
            raise
        assert mirror.vf is not None
        return mirror.vf


def _versions(vf: VirtualServiceFile) -> dict[str, int]:
    return {name: vf.version(name) for name in vf.names()}


def _map_local(info: dict[str, Any], readonly: bool) -> VirtualServiceFile | None:
    """Map the file if it is here and carries the token the server sent (same machine)."""
    from commy.accessors.local import LocalFileAccessor

    path = info["path"]
    if not os.path.isfile(path):
        return None
    try:
        token = protocol.b64decode(info["locality_token"])
        acc = LocalFileAccessor(path, readonly=readonly)
    except CommyError as exc:
        log.debug("local mapping of %s failed: %s", path, exc)
        return None
    try:
        header = ff.read_header(acc.view())
        if not hmac.compare_digest(header.locality_token, token):
            acc.close()
            return None
        return VirtualServiceFile(acc)
    except BaseException:
        acc.close()
        raise


def client_ssl_context(config: Config) -> Any:
    """An SSL context from ``client.ca_file`` / ``cert_file`` (mTLS), or None if neither is set."""
    c = config.client
    if not c.ca_file and not c.cert_file:
        return None
    import ssl

    ctx = ssl.create_default_context(cafile=c.ca_file)
    if c.cert_file:
        ctx.load_cert_chain(c.cert_file, c.key_file)
    return ctx


def _transport_name(url: str, config: Config) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return SCHEMES.get(scheme, config.client.transport)


@asynccontextmanager
async def connect(
    url: str,
    *,
    tenant: str,
    api_key: str | None = None,
    transport: str | None = None,
    ssl_context: Any = None,
    locality: str | None = None,
    config: Config | None = None,
    reconnect: bool | None = None,
) -> AsyncIterator[Client]:
    """Connect and authenticate; the client closes when the block ends.

    ``transport`` defaults from the URL (``inproc://`` → ``"inprocess"``, otherwise
    ``client.transport`` from config, ``"wss-lean"`` by default); ``api_key`` defaults to
    ``client.api_key`` (env ``COMMY_CLIENT_API_KEY``); ``locality`` (``"auto"``,
    ``"local"``, ``"remote"``) to ``client.locality``; ``ssl_context`` to one built from
    ``client.ca_file`` / ``cert_file`` / ``key_file`` when any is set; ``reconnect``
    (default ``client.reconnect``, on) re-establishes a lost connection with backoff,
    re-authenticates and resumes subscriptions from their last sequence number.
    """
    from commy.plugins import get_plugins

    cfg = config if config is not None else load_config()
    key = api_key if api_key is not None else cfg.client.api_key
    locality = locality or cfg.client.locality
    plugins = get_plugins(cfg.plugins.disable)
    name = transport or _transport_name(url, cfg)
    if ssl_context is None:
        ssl_context = client_ssl_context(cfg)
    options = ClientOptions(
        ssl_context=ssl_context, connect_timeout=cfg.client.timeout, spin_us=cfg.client.spin_us
    )
    # No timeout scope around this: a transport may enter a task group in connect() that
    # outlives it (httpx-ws does); the transport bounds the connect by connect_timeout.
    transport_obj = plugins.transports.get(name)()

    async def connector() -> Connection:
        return await transport_obj.connect(url, options)

    conn = await connector()
    client = Client(
        conn, tenant=tenant, config=cfg, locality=locality,
        reconnect=cfg.client.reconnect if reconnect is None else reconnect,
    )
    client._connector = connector
    # The blocking SDK opens a blocking connection of its own the same way (commy.direct).
    client._transport, client._url, client._options = transport_obj, url, options
    try:
        async with anyio.create_task_group() as tg:
            client._tg = tg
            tg.start_soon(client._background_reader)
            tg.start_soon(client._writer)
            tg.start_soon(client._watchdog)
            try:
                await client.authenticate(key)
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        # The background tasks end quietly, so a group of one is the caller's own error
        # (or the server's answer): give it back unwrapped.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        await client._close_connection()
