"""The client SDK: one connection to a commy server, the same API for local and remote.

    async with commy.connect("wss://host:8765", tenant="acme", api_key=key) as client:
        await client.create_service("sensors")
        await client.allocate_variable("sensors", "temp", "f64")
        vf = await client.get_virtual_service_file("sensors")
        vf.write("temp", 21.5)          # local: straight into the mapping
        print(vf.read("temp"), vf.is_local)

One background task reads the connection and dispatches responses by request id and
pushes to subscriptions, so any number of requests may be in flight at once. A second
task sends the queued writes of remote mirrors in order.

A remote mirror's ``vf.write`` queues the write without waiting; call it from the event
loop's thread (the queue is an anyio stream). ``await vf.awrite(...)`` waits for the
server and raises its error; errors of queued writes are logged and kept in
``client.write_errors``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
from collections.abc import AsyncIterator
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
#: Updates a subscription keeps for a consumer that is not reading (older ones are dropped).
UPDATE_BUFFER = 1024
SCHEMES = {"inproc": "inprocess"}


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
    __slots__ = ("done", "reply", "error", "parts", "size", "fire_and_forget")

    def __init__(self, fire_and_forget: bool = False) -> None:
        self.done = anyio.Event()
        self.reply: dict[str, Any] | None = None
        self.error: CommyError | None = None
        self.parts: dict[int, bytes] = {}
        self.size = 0
        self.fire_and_forget = fire_and_forget


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
            return acc.apply_update(msg["seq"], msg["layout"], changes)
        except CommyError as exc:
            log.warning("push for %s/%s not applicable (%s); resyncing", self.tenant, self.service, exc)
            return False

    async def load(self) -> None:
        data = await self.client.read_service(self.service, tenant=self.tenant)
        self.acc.replace(data)
        if self.vf is None:
            self.vf = VirtualServiceFile(self.acc)
        else:
            self.vf.refresh()
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


class _Subscription:
    def __init__(self) -> None:
        self.refs = 0
        self.mirrors: list[_Mirror] = []
        self.listeners: list[anyio.abc.ObjectSendStream[dict[str, Any]]] = []


class Client:
    """A connection to a commy server; create it with `connect`."""

    def __init__(self, conn: Connection, *, tenant: str, config: Config, locality: str) -> None:
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
        self._send_lock = anyio.Lock()
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

    # ------------------------------------------------------------------ plumbing
    @property
    def closed(self) -> bool:
        return self._closed

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._tg is not None and not self._closed:
            self._tg.start_soon(fn, *args)

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._closed:
            raise ConnectionLost("the client is closed")
        text = protocol.encode(msg)
        async with self._send_lock:
            await self._conn.send(text)

    async def _reader(self) -> None:
        try:
            while True:
                text = await self._conn.receive()
                try:
                    msg = protocol.decode(text, max_size=self._max_size, direction="response")
                except CommyError as exc:
                    log.warning("dropping a malformed message from the server: %s", exc)
                    continue
                mid = msg.get("id")
                if mid is None:
                    self._on_push(msg)
                    continue
                call = self._calls.get(mid)
                if call is not None:
                    self._on_reply(mid, call, msg)
        except ConnectionLost:
            pass
        finally:
            self._closed = True
            for call in list(self._calls.values()):
                call.error = ConnectionLost("connection to the server lost")
                call.done.set()
            self._calls.clear()

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
            if call.error is not None:
                log.warning("write failed on the server: %s", call.error)
                self.write_errors = [*self.write_errors[-99:], call.error]
            return
        call.done.set()

    def _on_push(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "VariablesUpdated":
            return
        sub = self._subs.get((msg["tenant"], msg["service"]))
        if sub is None:
            return
        for mirror in sub.mirrors:
            mirror.on_push(msg)
        for stream in sub.listeners:
            try:
                stream.send_nowait(msg)
            except anyio.WouldBlock:
                log.warning("subscriber of %s/%s is not reading; update dropped", msg["tenant"], msg["service"])
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def _writer(self) -> None:
        async with self._writes_out:
            async for msg, call in self._writes_out:
                mid = next(self._ids)
                self._calls[mid] = call
                try:
                    await self._send({**msg, "id": mid})
                except ConnectionLost as exc:
                    self._calls.pop(mid, None)
                    call.error = exc
                    call.done.set()

    def _queue_write(self, tenant: str, service: str, name: str, wire: Any, call: _Call | None) -> None:
        msg = {"type": "WriteVariable", "tenant": tenant, "service": service, "name": name, "value": wire}
        if self._closed:
            raise ConnectionLost("the client is closed")
        try:
            self._writes_in.send_nowait((msg, call or _Call(fire_and_forget=True)))
        except anyio.WouldBlock:
            raise LimitExceeded(f"more than {WRITE_QUEUE} writes are waiting to be sent") from None

    async def _wait(self, call: _Call, what: str) -> dict[str, Any]:
        try:
            with anyio.fail_after(self._timeout):
                await call.done.wait()
        except TimeoutError:
            raise Timeout(f"{what}: no answer within {self._timeout} s") from None
        if call.error is not None:
            raise call.error
        assert call.reply is not None
        return call.reply

    async def request(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply; the server's errors raise as their class."""
        mid = next(self._ids)
        call = _Call()
        self._calls[mid] = call
        try:
            await self._send({"type": type, "id": mid, **fields})
            reply = await self._wait(call, type)
        finally:
            self._calls.pop(mid, None)
        if type == "ReadService":
            reply = {**reply, "data": b"".join(call.parts[i] for i in range(len(call.parts)))}
        return reply

    async def aclose(self) -> None:
        """Say goodbye and stop the background tasks (idempotent).

        The connection itself is closed by `connect` after its task group has ended:
        a transport may have entered cancel scopes in ``connect()`` that must be left
        in the same order.
        """
        if not self._closed:
            with anyio.move_on_after(1, shield=True):
                try:
                    await self.request("Disconnect")
                except CommyError:
                    pass
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _close_connection(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._conn.aclose()
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
                await self.request("Subscribe", tenant=tenant, service=service)
            except BaseException:
                self._subs.pop(key, None)
                raise
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
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](UPDATE_BUFFER)
        sub = await self._subscribe(t, service)
        sub.listeners.append(send)
        try:
            yield self._updates(t, service, receive)
        finally:
            sub.listeners.remove(send)
            send.close()
            with anyio.CancelScope(shield=True):
                await self._unsubscribe(t, service)

    async def _updates(self, tenant: str, service: str, receive: Any) -> AsyncIterator[ServiceUpdate]:
        async with receive:
            async for msg in receive:
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
        readonly = info["permission"] == "read"
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
) -> AsyncIterator[Client]:
    """Connect and authenticate; the client closes when the block ends.

    ``transport`` defaults from the URL (``inproc://`` → ``"inprocess"``, otherwise
    ``client.transport`` from config, ``"wss"`` by default); ``api_key`` defaults to
    ``client.api_key`` (env ``COMMY_CLIENT_API_KEY``); ``locality`` (``"auto"``,
    ``"local"``, ``"remote"``) to ``client.locality``; ``ssl_context`` to one built from
    ``client.ca_file`` / ``cert_file`` / ``key_file`` when any is set.
    """
    from commy.plugins import get_plugins

    cfg = config if config is not None else load_config()
    key = api_key if api_key is not None else cfg.client.api_key
    locality = locality or cfg.client.locality
    plugins = get_plugins(cfg.plugins.disable)
    name = transport or _transport_name(url, cfg)
    if ssl_context is None:
        ssl_context = client_ssl_context(cfg)
    options = ClientOptions(ssl_context=ssl_context, connect_timeout=cfg.client.timeout)
    # No timeout scope around this: a transport may enter a task group in connect() that
    # outlives it (httpx-ws does); the transport bounds the connect by connect_timeout.
    conn = await plugins.transports.get(name)().connect(url, options)
    client = Client(conn, tenant=tenant, config=cfg, locality=locality)
    try:
        async with anyio.create_task_group() as tg:
            client._tg = tg
            tg.start_soon(client._reader)
            tg.start_soon(client._writer)
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
