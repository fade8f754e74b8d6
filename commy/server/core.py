"""The commy server, independent of any transport.

`Server.serve` runs the configured transport and hands each connection to `Server.handle`;
tests and embedders call `handle` directly with any `Connection` (e.g. in-process).

Per connection a `Session` reads messages and runs each request in its own task (bounded
by ``server.max_inflight``), so a slow request never holds up the next one and one slow
client never stalls another. Cheap requests that never block (``_inline_ops``: a mapped
read or write, a heartbeat) are answered synchronously in the reader loop itself: a task
per message would cost more than the work. Pushes go through a per-session coalescing buffer: only the
latest value of each variable waits, and a client that cannot take a push within
``server.push_timeout`` is disconnected.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from commy import fileformat as ff
from commy import protocol
from commy.auth.base import (
    PERMISSIONS,
    ROLE_SERVER_ADMIN,
    Accept,
    AuthContext,
    AuthRequest,
    Principal,
    Reject,
)
from commy.config import Config
from commy.errors import (
    AlreadyExists,
    CommyError,
    ConnectionLost,
    FileError,
    InternalError,
    InvalidRequest,
    LimitExceeded,
    PermissionDenied,
    ServiceNotFound,
    TenantNotFound,
    Unauthorized,
)
from commy.names import check_object_name, check_variable_name
from commy.server import limits
from commy.server.admin import AdminOps
from commy.server.changelog import ChangeLog
from commy.server.events import ChangeEvent, VariableChange
from commy.server.permissions import Permissions
from commy.server.store import ServiceRow
from commy.transports.base import Connection, ServerOptions
from commy.vartypes import parse_type
from commy.virtual_file import VirtualServiceFile

log = logging.getLogger(__name__)

READ, WRITE, ADMIN = PERMISSIONS["read"], PERMISSIONS["write"], PERMISSIONS["admin"]
_LEVEL_NAMES = {v: k for k, v in PERMISSIONS.items()}
MAX_AUTH_FAILURES = 5
# Requests answered before authentication.
_OPEN = frozenset({"Authenticate", "Heartbeat"})
# Requests answered in the connection's reader loop: they never block (a mapped read or
# write and one send), and a task + semaphore per message would cost more than the work.
_session_ids = itertools.count(1)


class ServiceHandle:
    """An open service: its mapping, subscribers, and change-tracking state."""

    def __init__(self, row: ServiceRow, vf: VirtualServiceFile, on_track: Callable[[], None] | None = None) -> None:
        self.row = row
        self.vf = vf
        #: called when tracking starts (wakes the server's poll loop)
        self._on_track = on_track
        self.subscribers: dict[int, Session] = {}
        self.users: set[int] = set()  # sessions that touched it (ephemeral lifetime)
        self.tracking = False  # shadow is current; the poller diffs against it
        self.last_seq = vf.change_seq
        self.last_layout = vf.layout_generation
        self._ranges_gen = -1
        self._ranges: dict[str, tuple[int, int]] = {}
        #: committed changes since tracking started, for resuming subscribers
        self.changes: ChangeLog | None = None
        #: the file was found deleted, replaced or truncated underneath the mapping
        self.damaged = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.row.tenant, self.row.name)

    def ranges(self, names: list[str]) -> list[tuple[int, int]]:
        """Storage byte ranges of ``names`` (for moving the shadow without a diff)."""
        vf = self.vf
        if self._ranges_gen != vf.layout_generation:
            self._ranges_gen = vf.layout_generation
            self._ranges = {
                n: (i.offset, i.offset + vf.type_of(n).storage_size) for n, i in vf.variables().items()
            }
        return [self._ranges[n] for n in names if n in self._ranges]

    def start_tracking(self) -> None:
        self.vf.snapshot_shadow()
        self.last_seq = self.vf.change_seq
        self.last_layout = self.vf.layout_generation
        self.tracking = True
        # Changes while nobody tracked are unknown: the log starts complete from here.
        self.changes = ChangeLog(self.last_seq)
        if self._on_track is not None:
            self._on_track()


#: most checkpoints a woken push loop yields while changes keep arriving (push batching)
_PUSH_YIELDS = 16
#: a push loop woken within this many seconds of its last push is in a burst: it batches
_PUSH_BURST_WINDOW = 0.002


class _Pending:
    """Coalesced, not yet pushed changes of one service for one session."""

    __slots__ = ("event", "variables")

    def __init__(self, event: ChangeEvent) -> None:
        self.event = event
        self.variables: dict[str, VariableChange] = {}

    def merge(self, event: ChangeEvent) -> None:
        if event.seq >= self.event.seq:
            self.event = event
        for v in event.variables:
            self.variables[v.name] = v


class Session:
    """One client connection."""

    def __init__(self, server: Server, conn: Connection) -> None:
        self.id = next(_session_ids)
        self.server = server
        self.conn = conn
        self.principal: Principal | None = None
        self.auth_failures = 0
        self.used: set[tuple[str, str]] = set()
        self.subscribed: set[tuple[str, str]] = set()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._pending_count = 0
        self._enqueued = 0  # changes ever enqueued: push_loop waits while it grows
        self._last_push = 0.0  # time.monotonic() when push_loop last finished sending
        self._overflowed = False
        self._wake = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def tenant(self) -> str | None:
        return self.principal.tenant if self.principal else None

    async def send(self, msg: dict[str, Any]) -> None:
        # The transport contract makes concurrent sends safe: no lock of our own.
        await self.conn.send(protocol.encode(msg))

    def enqueue(self, event: ChangeEvent) -> None:
        key = (event.tenant, event.service)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(event)
        before = len(pending.variables)
        pending.merge(event)
        self._enqueued += 1
        # Coalescing bounds the backlog by the variables subscribed to; this bounds that.
        self._pending_count += len(pending.variables) - before
        if self._pending_count > self.server.config.limits.max_pending_pushes and not self._overflowed:
            self._overflowed = True
            log.warning("session %d: more than %d pushes pending (limits.max_pending_pushes); disconnecting",
                        self.id, self.server.config.limits.max_pending_pushes)
            self._pending.clear()
            if self._tg is not None:
                self._tg.start_soon(self.close)
            return
        self._wake.set()
        self.server._pushes_woken = True

    async def push_loop(self) -> None:
        timeout = self.server.config.server.push_timeout
        while True:
            await self._wake.wait()
            # Push batching, in a burst only: while changes keep arriving, let the other
            # ready tasks run first (e.g. a writer's reader loop with more requests
            # already buffered), so one push carries all of them. A lone change is pushed
            # at once: its latency is what subscribers wait for.
            if time.monotonic() - self._last_push < _PUSH_BURST_WINDOW:
                for _ in range(_PUSH_YIELDS):
                    before = self._enqueued
                    await anyio.lowlevel.checkpoint()
                    if self._enqueued == before:
                        break
            self._wake = anyio.Event()
            pending, self._pending = self._pending, {}
            self._pending_count = 0
            for key, p in pending.items():
                if key not in self.subscribed:
                    continue
                for msg in _split_push(p):
                    try:
                        with anyio.fail_after(timeout):
                            await self.send(msg)
                    except TimeoutError:
                        log.warning("session %d: client too slow for pushes; disconnecting", self.id)
                        await self.close()
                        return
                    except ConnectionLost:
                        await self.close()
                        return
            self._last_push = time.monotonic()

    async def close(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self.conn.aclose()
            except Exception:  # closing a broken connection may fail; it is gone either way
                log.debug("session %d: close failed", self.id, exc_info=True)


def _split_push(p: _Pending) -> list[dict[str, Any]]:
    """``VariablesUpdated`` messages of at most ~CHUNK_LIMIT bytes each."""
    base = p.event.to_wire()
    base["variables"] = []
    limit = protocol.CHUNK_LIMIT - 1024
    out: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for v in p.variables.values():
        wire = v.to_wire()
        value = v.value
        # Numbers and bools encode to well under 128 bytes: measure only what can be big.
        n = 128 if isinstance(value, int | float) else len(protocol.encode(wire))
        if current and size + n > limit:
            out.append({**base, "variables": current})
            current, size = [], 0
        current.append(wire)
        size += n
    out.append({**base, "variables": current})
    return out


class Server(AdminOps):
    """Tenants, services and variables behind a transport."""

    def __init__(self, config: Config, plugins: Any = None) -> None:
        from commy.plugins import get_plugins

        self.config = config
        self.plugins = plugins if plugins is not None else get_plugins(config.plugins.disable)
        self.data_path = ff.ensure_data_dir(config.data_path)
        from commy.backplane import create_backplane

        # Resolved once: every node of a scale-out shares metadata through it.
        self.backplane = create_backplane(config, self.plugins)
        self.store = self.backplane.open_store(self.data_path)
        self.permissions = Permissions(config, self.store)
        context = AuthContext(config, self.store)
        self.authenticators = [
            self.plugins.authenticators.get(name)(context) for name in config.server.authenticators
        ]
        self._services: dict[tuple[str, str], ServiceHandle] = {}
        self._sessions: dict[int, Session] = {}
        self._sinks: list[Callable[[ChangeEvent], None]] = [self._deliver]
        self._kernel: Any = None
        #: set while the poll loop sleeps because no service is tracked
        self._poll_wake: anyio.Event | None = None
        #: a session's push task was woken since the last inline answer (see `handle`)
        self._pushes_woken = False
        #: requests cheap enough to answer in the session's reading task, without a task
        #: of their own (a mapped read or write, a heartbeat): their synchronous handlers
        self._inline_ops: dict[str, Callable[[Session, dict[str, Any]], dict[str, Any]]] = {
            "ReadVariable": self._read_variable,
            "WriteVariable": self._write_variable,
            "Heartbeat": self._heartbeat,
        }
        if not self.backplane.shared_metadata:  # shared: other nodes may still use them
            self._remove_stale_ephemeral()
        self.backplane.attach(self)

    # ------------------------------------------------------------------ lifecycle
    @property
    def kernel(self) -> Any:
        if self._kernel is None:
            if self.config.kernel.name:
                from commy.kernels.selection import select_kernel

                cfg = self.config.kernel
                self._kernel = select_kernel(self.plugins.kernels, cfg.name, cfg.variant).kernel
            else:
                from commy.kernels.default import default_kernel

                self._kernel = default_kernel()
        return self._kernel

    def create_admin_key(self, name: str = "admin", description: str = "") -> str:
        """Bootstrap: a new server-admin API key, written straight to the store."""
        key, _key_id = self.store.create_api_key(
            None, name, roles=[ROLE_SERVER_ADMIN], description=description
        )
        return key

    def add_event_sink(self, sink: Callable[[ChangeEvent], None]) -> None:
        """Call ``sink(event)`` for every committed change (e.g. a backplane publisher)."""
        self._sinks.append(sink)

    def publish(self, event: ChangeEvent) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed", sink)

    def close(self) -> None:
        for handle in list(self._services.values()):
            handle.vf.close()
        self._services.clear()
        self.backplane.close()
        self.store.close()

    def _remove_stale_ephemeral(self) -> None:
        # Ephemeral services die with their last client; after a restart none is left.
        for row in self.store.list_services():
            if row.ephemeral:
                log.info("removing ephemeral service %s/%s left by a previous run", row.tenant, row.name)
                self.store.delete_service(row.tenant, row.name)
                self._unlink(row.file)

    def _ssl_context(self) -> ssl.SSLContext | None:
        from commy.server.tls import server_ssl_context

        return server_ssl_context(self.config, self.data_path)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the configured transport until cancelled; ``task_status.started(url)``."""
        cfg = self.config.server
        transport = self.plugins.transports.get(cfg.transport)()
        options = ServerOptions(
            host=cfg.host,
            port=cfg.port,
            ssl_context=self._ssl_context(),
            allow_insecure=not cfg.tls,
            max_message_size=cfg.max_message_size,
            extra={"name": cfg.name, "config": self.config},
        )
        async with anyio.create_task_group() as tg:
            await tg.start(self.backplane.run)
            tg.start_soon(self._poll_loop)
            if cfg.wakeup == "futex":
                from commy.server.wakeup import FutexWakeups

                tg.start_soon(FutexWakeups(self).run)
            tg.start_soon(self._access_loop)
            url = await tg.start(partial(transport.serve, self.handle, options))
            log.info("commy server listening on %s", url)
            task_status.started(url)

    def _wake_poller(self) -> None:
        if self._poll_wake is not None:
            self._poll_wake.set()

    async def _poll_loop(self) -> None:
        interval = self.config.server.poll_interval
        # Files damaged underneath the server (deleted, replaced, truncated) are looked for
        # a few times a second, not on every tick: two stat calls per service add up.
        check_every = max(int(0.1 / interval), 1) if interval > 0 else 1
        tick = 0
        while True:
            if not any(handle.tracking for handle in self._services.values()):
                # Nothing to watch: sleep until a service is tracked instead of waking
                # every interval (a timer wake-up costs CPU, and latency to others).
                self._poll_wake = anyio.Event()
                await self._poll_wake.wait()
                self._poll_wake = None
            await anyio.sleep(interval)
            tick += 1
            for handle in list(self._services.values()):
                if not handle.tracking:
                    continue
                try:
                    if tick % check_every == 0 and not self._backing_ok(handle):
                        continue
                    # One mapped 8-byte read per subscribed service when nothing changed.
                    if handle.vf.change_seq != handle.last_seq:
                        self._scan(handle)
                except CommyError as exc:
                    log.warning("change scan of %s/%s failed: %s", *handle.key, exc)

    def _backing_ok(self, handle: ServiceHandle) -> bool:
        """False (and logged once) while the service's file is damaged; others go on."""
        try:
            handle.vf.check_backing()
        except CommyError as exc:
            if not handle.damaged:
                log.error("service %s/%s: %s; its requests fail until it is repaired", *handle.key, exc)
            handle.damaged = True
            return False
        if handle.damaged:
            log.warning("service %s/%s: file looks intact again", *handle.key)
        handle.damaged = False
        return True

    # ------------------------------------------------------------------ connections
    async def handle(self, conn: Connection) -> None:
        """Serve one connection until it closes or says Disconnect."""
        session = Session(self, conn)
        self._sessions[session.id] = session
        inline_ops = self._inline_ops
        limiter = anyio.Semaphore(self.config.server.max_inflight)
        max_size = self.config.server.max_message_size
        try:
            async with anyio.create_task_group() as tg:
                session._tg = tg
                tg.start_soon(session.push_loop)
                while True:
                    try:
                        text = await conn.receive()
                    except ConnectionLost:
                        break
                    try:
                        msg = protocol.decode(text, max_size=max_size)
                    except CommyError as exc:
                        await self._send_quietly(session, protocol.error_message(protocol.peek_id(text), exc))
                        continue
                    kind = msg["type"]
                    inline = inline_ops.get(kind)
                    if inline is not None:
                        reply = self._answer_inline(session, msg, inline)
                        if self._pushes_woken:
                            # A write woke subscribers' push tasks: let them send first.
                            # The writer's acknowledgement waits a few µs; otherwise the
                            # pushes wait behind it, and often behind the writer itself,
                            # which the acknowledgement wakes on a 2-vCPU machine.
                            self._pushes_woken = False
                            await anyio.lowlevel.checkpoint()
                        try:
                            await conn.send(protocol.encode(reply))
                        except ConnectionLost:
                            break
                        continue
                    if kind == "Disconnect":
                        await self._run(session, msg, None)
                        break
                    await limiter.acquire()
                    tg.start_soon(self._run, session, msg, limiter)
                tg.cancel_scope.cancel()
        except Exception:
            # A broken connection (or a bug) ends this session only, never the server.
            log.exception("session %d ended with an error", session.id)
        finally:
            with anyio.CancelScope(shield=True):
                self._end_session(session)

    def _answer_inline(
        self, session: Session, msg: dict[str, Any], op: Callable[[Session, dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """The reply to an inline request, errors included (the same as `_run` gives)."""
        mid = msg["id"]
        try:
            if session.principal is None and msg["type"] not in _OPEN:
                raise Unauthorized(f"{msg['type']} needs authentication first")
            reply = op(session, msg)
        except CommyError as exc:
            return protocol.error_message(mid, exc)
        except Exception:
            log.exception("request %s failed", msg["type"])
            return protocol.error_message(mid, InternalError("internal error; see the server log"))
        reply["id"] = mid
        return reply

    async def _send_quietly(self, session: Session, msg: dict[str, Any]) -> None:
        try:
            await session.send(msg)
        except ConnectionLost:
            pass

    async def _run(self, session: Session, msg: dict[str, Any], limiter: anyio.Semaphore | None) -> None:
        mid = msg["id"]
        try:
            try:
                reply = await self.dispatch(session, msg)
            except CommyError as exc:
                reply = protocol.error_message(mid, exc)
                if isinstance(exc, Unauthorized) and session.auth_failures >= self.config.limits.max_auth_failures:
                    await self._send_quietly(session, reply)
                    log.warning("session %d: too many failed authentications", session.id)
                    await session.close()
                    return
            except Exception:
                log.exception("request %s failed", msg.get("type"))
                reply = protocol.error_message(mid, InternalError("internal error; see the server log"))
            if reply is not None:
                reply["id"] = mid
                await self._send_quietly(session, reply)
        finally:
            if limiter is not None:
                limiter.release()

    def _end_session(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        for key in session.subscribed:
            handle = self._services.get(key)
            if handle is not None:
                handle.subscribers.pop(session.id, None)
                self._stop_tracking_if_idle(handle)
        for key in session.used:
            handle = self._services.get(key)
            if handle is None:
                continue
            handle.users.discard(session.id)
            if handle.row.ephemeral and not handle.users:
                try:
                    self._delete_service(*key)
                except CommyError as exc:
                    log.warning("removing ephemeral service %s/%s failed: %s", *key, exc)

    # ------------------------------------------------------------------ dispatch
    async def dispatch(self, session: Session, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Run one validated request; the reply without ``id`` (None if already sent)."""
        kind = msg["type"]
        if kind not in _OPEN and session.principal is None:
            raise Unauthorized(f"{kind} needs authentication first")
        op = getattr(self, f"_op_{kind}")
        return await op(session, msg)

    # -- access control
    def _tenant(self, session: Session, msg: dict[str, Any]) -> str:
        """The tenant a request addresses; only server admins may leave their own."""
        principal = session.principal
        assert principal is not None
        tenant = msg.get("tenant", principal.tenant)
        if tenant != principal.tenant and not principal.server_admin:
            raise PermissionDenied(f"principal {principal.name!r} cannot act in tenant {tenant!r}")
        return check_object_name("tenant", tenant)

    def level(self, principal: Principal, tenant: str, service: str) -> int:
        """The principal's permission level on ``tenant/service`` (0: none)."""
        return self.permissions.level(principal, tenant, service)

    def _require(self, session: Session, tenant: str, service: str, need: int) -> None:
        principal = session.principal
        assert principal is not None
        if self.level(principal, tenant, service) < need:
            raise PermissionDenied(
                f"principal {principal.name!r} needs {_LEVEL_NAMES[need]} on service {service!r}"
            )

    def _service(self, session: Session, msg: dict[str, Any], need: int) -> ServiceHandle:
        tenant = self._tenant(session, msg)
        name = check_object_name("service", msg["service"])
        self._require(session, tenant, name, need)
        handle = self._open(tenant, name)
        session.used.add(handle.key)
        handle.users.add(session.id)
        return handle

    def _require_server_admin(self, session: Session) -> None:
        assert session.principal is not None
        if not session.principal.server_admin:
            raise PermissionDenied("only a server admin may manage tenants")

    # -- services on disk
    def _open(self, tenant: str, name: str) -> ServiceHandle:
        handle = self._services.get((tenant, name))
        if handle is not None:
            if not self._backing_ok(handle):
                handle.vf.check_backing()  # raises the typed error for this request
            return handle
        row = self.store.service(tenant, name)
        if row is None:
            raise ServiceNotFound(f"no service {name!r} in tenant {tenant!r}")
        self.backplane.prepare_file(self.data_path, row)
        vf = VirtualServiceFile.open(ff.service_path(self.data_path, row.file), kernel=self.kernel)
        handle = self._services[(tenant, name)] = ServiceHandle(row, vf, self._wake_poller)
        self.backplane.opened(handle)
        return handle

    def _unlink(self, file: str) -> None:
        try:
            ff.service_path(self.data_path, file).unlink(missing_ok=True)
        except OSError as exc:
            raise FileError(f"cannot remove service file {file!r}: {exc.strerror or exc}") from exc

    def _delete_service(self, tenant: str, name: str) -> None:
        row = self.store.delete_service(tenant, name)  # first: nobody opens it again
        handle = self._services.pop((tenant, name), None)
        if handle is not None:
            for session in handle.subscribers.values():
                session.subscribed.discard((tenant, name))
            handle.vf.close()
        self._unlink(row.file)
        self.backplane.deleted(tenant, name)
        log.info("deleted service %s/%s", tenant, name)

    # -- change events
    def _scan(self, handle: ServiceHandle) -> None:
        """Diff a tracked service against its shadow and publish what changed."""
        vf = handle.vf
        seq = vf.change_seq  # read before the diff: a later change triggers another scan
        names = vf.detect_changes()
        layout = vf.layout_generation
        handle.last_seq = seq
        if names or layout != handle.last_layout:
            handle.last_layout = layout
            self.publish(self._event(handle, names, seq, "diff"))

    def _wants_events(self, handle: ServiceHandle) -> bool:
        """True when someone listens: a subscriber, or a sink besides the built-in one."""
        if handle.tracking:
            return True
        if handle.subscribers or len(self._sinks) > 1:
            handle.start_tracking()
            return True
        return False

    def _stop_tracking_if_idle(self, handle: ServiceHandle) -> None:
        if handle.changes is not None:
            # Keep tracking (one mapped read per poll when idle): a subscriber that lost
            # its connection resumes from the change log, which must stay complete.
            return
        if not handle.subscribers and len(self._sinks) == 1:
            handle.tracking = False  # the shadow goes stale; re-taken when someone listens

    def _layout_changed(self, handle: ServiceHandle) -> None:
        """After allocate/deallocate: a diff grows the shadow; the event names the new layout."""
        if handle.tracking:
            self._scan(handle)

    def _commit(self, handle: ServiceHandle, names: list[str], origin: str) -> None:
        """Publish a change whose variables are known (no diff needed)."""
        vf = handle.vf
        if not handle.tracking:
            if not self._wants_events(handle):
                return  # nobody listens
            # tracking just started: the new shadow already holds this change
        elif vf.layout_generation != handle.last_layout or (
            origin == "write" and handle.last_seq != vf.change_seq - 1
        ):
            # Another process changed the layout, or committed besides this write: one
            # diff names both changes, so each sequence number belongs to one event only
            # (a resume replays the events after a number).
            self._scan(handle)
            return
        else:
            vf.update_shadow(handle.ranges(names))
        seq = vf.change_seq
        if handle.last_seq == seq - 1:
            handle.last_seq = seq  # only our change moved it: nothing for the poller
        handle.last_layout = vf.layout_generation
        self.publish(self._event(handle, names, seq, origin))

    def _event(self, handle: ServiceHandle, names: list[str], seq: int, origin: str) -> ChangeEvent:
        vf = handle.vf
        changes = []
        for name in names:
            if name not in vf:
                continue
            changes.append(VariableChange(name, vf.version(name), vf.read(name), vf.type_of(name).spec))
        return ChangeEvent(
            handle.row.tenant, handle.row.name, vf.service_id, seq, vf.layout_generation,
            tuple(changes), origin,
        )

    def _deliver(self, event: ChangeEvent) -> None:
        handle = self._services.get((event.tenant, event.service))
        if handle is None:
            return
        if handle.changes is not None:
            handle.changes.append(event)
        for session in handle.subscribers.values():
            session.enqueue(event)

    def _resume(self, session: Session, handle: ServiceHandle, since: int) -> str:
        """Queue for ``session`` every change after ``since``: "current" (none missed),
        "replay" (from the change log) or "snapshot" (every current value)."""
        if since == handle.last_seq:
            return "current"  # unscanned local changes follow through the poller
        events = handle.changes.since(since) if handle.changes is not None and since < handle.last_seq else None
        layout = handle.vf.layout_generation
        if events is not None and all(e.layout == layout for e in events):
            for event in events:
                session.enqueue(event)
            return "replay"
        vf = handle.vf
        session.enqueue(self._event(handle, list(vf.names()), vf.change_seq, "snapshot"))
        return "snapshot"

    # ------------------------------------------------------------------ operations
    async def _op_Authenticate(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        if session.principal is not None:
            raise InvalidRequest("this connection is already authenticated")
        tenant = check_object_name("tenant", msg["tenant"])
        request = AuthRequest(tenant, msg.get("api_key"), dict(msg.get("credentials") or {}))
        principal = None
        for auth in self.authenticators:
            result = await auth.authenticate(request, session.conn.peer)
            if isinstance(result, Accept):
                principal = result.principal
                break
            if isinstance(result, Reject):
                session.auth_failures += 1
                raise Unauthorized(result.reason)
        if principal is None:
            session.auth_failures += 1
            raise Unauthorized("no authenticator accepted these credentials")
        if principal.tenant != tenant:
            session.auth_failures += 1
            raise Unauthorized("the authenticator returned a principal of another tenant")
        if not principal.server_admin and not self.store.tenant_exists(tenant):
            session.auth_failures += 1
            raise Unauthorized(f"unknown tenant {tenant!r}")
        principal = self.permissions.with_config_roles(principal)
        session.principal = principal
        log.info("session %d authenticated as %s in tenant %s", session.id, principal.name, tenant)
        return {
            "type": "Authenticated",
            "tenant": tenant,
            "principal": principal.name,
            "roles": sorted(principal.roles),
        }

    async def _op_Disconnect(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"type": "Ok"}

    async def _op_CreateTenant(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_server_admin(session)
        self.store.create_tenant(msg["name"])
        return {"type": "TenantInfo", "name": msg["name"]}

    async def _op_DeleteTenant(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_server_admin(session)
        name = check_object_name("tenant", msg["name"])
        files = self.store.delete_tenant(name)
        for key in [k for k in self._services if k[0] == name]:
            handle = self._services.pop(key)
            for s in handle.subscribers.values():
                s.subscribed.discard(key)
            handle.vf.close()
        for file in files:
            self._unlink(file)
        self.backplane.deleted(name, None)
        return {"type": "Ok"}

    async def _op_ListTenants(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        self._require_server_admin(session)
        return {"type": "TenantList", "tenants": self.store.list_tenants()}

    async def _op_CreateService(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        tenant = self._tenant(session, msg)
        name = check_object_name("service", msg["service"])
        self._require(session, tenant, name, ADMIN)
        if not self.store.tenant_exists(tenant):
            raise TenantNotFound(f"no tenant {tenant!r}")
        if self.store.service(tenant, name) is not None:
            raise AlreadyExists(f"service {name!r} already exists in tenant {tenant!r}")
        limits.check_new_service(self.config, self.store, tenant)
        path = ff.create_service_file(self.data_path)
        try:
            self.store.add_service(tenant, name, path.name, bool(msg.get("ephemeral", False)))
        except BaseException:
            path.unlink(missing_ok=True)  # lost a race with another create
            raise
        handle = self._open(tenant, name)
        session.used.add(handle.key)
        handle.users.add(session.id)
        return self._service_info(handle)

    async def _op_GetService(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return self._service_info(self._service(session, msg, READ))

    async def _op_DeleteService(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        tenant = self._tenant(session, msg)
        name = check_object_name("service", msg["service"])
        self._require(session, tenant, name, ADMIN)
        self._delete_service(tenant, name)
        return {"type": "Ok"}

    async def _op_ListServices(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        tenant = self._tenant(session, msg)
        assert session.principal is not None
        rows = [
            r for r in self.store.list_services(tenant) if self.level(session.principal, tenant, r.name) >= READ
        ]
        services = []
        for r in rows:
            sid = r.file[len("service_") : -len(".mem")]
            services.append({"name": r.name, "service_id": sid, "ephemeral": r.ephemeral})
        return {"type": "ServiceList", "tenant": tenant, "services": services}

    def _service_info(self, handle: ServiceHandle) -> dict[str, Any]:
        vf = handle.vf
        variables = [
            {
                "name": i.name,
                "type": i.type,
                "offset": i.offset,
                "size": i.size,
                "version": i.version,
                "persistent": i.persistent,
            }
            for i in vf.variables().values()
        ]
        return {
            "type": "ServiceInfo",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "service_id": vf.service_id,
            "ephemeral": handle.row.ephemeral,
            "seq": vf.change_seq,
            "layout": vf.layout_generation,
            "variables": variables,
        }

    async def _op_AllocateVariable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, WRITE)
        name = check_variable_name(msg["name"])
        vt = parse_type(msg["var_type"])
        if vt.storage_size > self.config.server.max_variable_size:
            raise LimitExceeded(
                f"variable {name!r} needs {vt.storage_size} bytes; the limit is "
                f"{self.config.server.max_variable_size} (server.max_variable_size)"
            )
        initial = msg.get("initial")
        if initial is not None:
            initial = protocol.value_from_wire(vt, name, initial)
        limits.check_allocate(self.config, handle.vf, vt)
        info = handle.vf.allocate(name, vt, persistent=msg.get("persistent", True), initial=initial)
        self._layout_changed(handle)
        return {
            "type": "VariableInfo",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "variable": {
                "name": info.name,
                "type": info.type,
                "offset": info.offset,
                "size": info.size,
                "version": info.version,
                "persistent": info.persistent,
            },
        }

    async def _op_DeallocateVariable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, ADMIN)
        handle.vf.deallocate(msg["name"])
        self._layout_changed(handle)
        return {"type": "Ok"}

    async def _op_ReadVariable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return self._read_variable(session, msg)

    async def _op_WriteVariable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return self._write_variable(session, msg)

    async def _op_Heartbeat(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return self._heartbeat(session, msg)

    # The inline requests: synchronous, answered by the session's reading task itself.
    def _heartbeat(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"type": "Heartbeat"}

    def _read_variable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, READ)
        vf = handle.vf
        name = msg["name"]
        value = vf.read(name)
        vt = vf.type_of(name)
        return {
            "type": "VariableValue",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "name": name,
            "var_type": vt.spec,
            "version": vf.version(name),
            "seq": vf.change_seq,
            "value": protocol.value_to_wire(vt, value),
        }

    def _write_variable(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, WRITE)
        vf = handle.vf
        name = msg["name"]
        vt = vf.type_of(name)
        vf.write(name, protocol.value_from_wire(vt, name, msg["value"]))
        self._commit(handle, [name], "write")
        return {
            "type": "Written",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "name": name,
            "version": vf.version(name),
            "seq": vf.change_seq,
        }

    async def _op_ReadService(self, session: Session, msg: dict[str, Any]) -> None:
        handle = self._service(session, msg, READ)
        vf = handle.vf
        vf.names()  # remaps first if another process grew the file
        # One synchronous copy: no server write can interleave with it.
        data = vf.accessor.read_bytes(0, vf.accessor.file_size())
        for index, count, piece in protocol.chunks(data):
            await session.send(
                {
                    "type": "ServiceSnapshot",
                    "id": msg["id"],
                    "tenant": handle.row.tenant,
                    "service": handle.row.name,
                    "chunk": index,
                    "chunks": count,
                    "size": len(data),
                    "data": protocol.b64encode(piece),
                }
            )
        return None

    async def _op_Subscribe(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, READ)
        if handle.key not in session.subscribed:
            limits.check_subscribe(self.config, len(session.subscribed))
        if not handle.tracking:
            handle.start_tracking()
        handle.subscribers[session.id] = session
        session.subscribed.add(handle.key)
        reply = {
            "type": "Subscribed",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "seq": handle.vf.change_seq,
        }
        since = msg.get("since")
        if since is not None:
            reply["resume"] = self._resume(session, handle, since)
        return reply

    async def _op_Unsubscribe(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, READ)
        handle.subscribers.pop(session.id, None)
        session.subscribed.discard(handle.key)
        self._stop_tracking_if_idle(handle)
        return {"type": "Ok"}

    async def _op_GetServiceFilePath(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, READ)
        assert session.principal is not None
        level = self.level(session.principal, handle.row.tenant, handle.row.name)
        vf = handle.vf
        return {
            "type": "ServiceFilePath",
            "tenant": handle.row.tenant,
            "service": handle.row.name,
            "service_id": vf.service_id,
            "path": str(ff.service_path(self.data_path, handle.row.file)),
            "size": vf.accessor.file_size(),
            "locality_token": protocol.b64encode(vf.locality_token),
            "permission": _LEVEL_NAMES[level],
            # a read-only principal maps the file read-only: a guard against accidents,
            # not a boundary (any process of the server's OS user can open the file)
            "readonly": level < WRITE,
        }

    async def _op_ReportVariableChanges(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        handle = self._service(session, msg, WRITE)
        vf = handle.vf
        names = [n for n in msg["names"] if n in vf]
        self._commit(handle, names, "report")
        return {"type": "Ok"}
