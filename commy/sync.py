"""The blocking client: the async SDK for code that has no event loop.

    with commy.connect_sync("wss://127.0.0.1:8765", tenant="acme", api_key=key) as client:
        client.create_service("sensors")
        client.allocate_variable("sensors", "temp", "f64")
        vf = client.get_virtual_service_file("sensors")
        vf.write("temp", 21.5)
        for event in vf.iter_changes(timeout=5):
            print(event.variables, vf.read("temp"))

Every method of the async `commy.client.Client` is here under the same name and
arguments, blocking until the server answered. The event loop runs in a background
thread (an anyio blocking portal) that this object owns and stops on `close`; it holds
subscriptions, mirrors and events. Plain requests (``read_variable``, ``create_service``,
...) skip it when the transport offers a blocking connection (WSS does): they go over a
second connection of this client's own, from the calling thread straight to the socket
(`commy.direct`; config ``client.blocking_requests``).

`get_virtual_service_file` returns the same `VirtualServiceFile`: a local mapping is
used straight from the caller's thread (nothing crosses threads on its hot path); a
remote mirror's writes are handed to the loop thread, which owns the mirror's buffer and
its send queue, so they are applied and sent in order and their errors raise in the
caller.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from commy.client import Client, ServiceInfo, ServiceUpdate, connect
from commy.config import Config
from commy.direct import DirectRequests
from commy.virtual_file import VariableInfo, VirtualServiceFile

log = logging.getLogger(__name__)

_END = object()


def _blocking(name: str) -> Callable[..., Any]:
    method = getattr(Client, name)

    @functools.wraps(method)
    def call(self: SyncClient, *args: Any, **kwargs: Any) -> Any:
        if self._direct is not None:
            return self._direct_call(name, *args, **kwargs)
        return self._portal.call(functools.partial(getattr(self._client, name), *args, **kwargs))

    return call


class SyncClient:
    """A blocking connection to a commy server; create it with `connect_sync`."""

    def __init__(
        self,
        portal_cm: AbstractContextManager[BlockingPortal],
        portal: BlockingPortal,
        client_cm: AbstractContextManager[Client],
        client: Client,
    ) -> None:
        self._portal_cm = portal_cm
        self._portal = portal
        self._client_cm = client_cm
        self._client = client
        self._loop_thread = portal.call(threading.get_ident)
        self._lock = threading.Lock()
        self._open = True
        #: plain requests go over a blocking connection of their own (commy.direct)
        self._direct: DirectRequests | None = None
        #: a remote mirror was written since the last direct request (see _direct_call)
        self._mirror_writes = False
        connect_blocking = getattr(client._transport, "connect_blocking", None)
        if connect_blocking is not None and client.config.client.blocking_requests:
            url, options = client._url, client._options
            self._direct = DirectRequests(
                lambda: connect_blocking(url, options),
                tenant=client.tenant,
                auth_fields=dict(client._auth_fields),
                timeout=client.config.client.timeout,
            )

    def _direct_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        assert self._direct is not None
        if self._mirror_writes:
            # Mirror writes travel on the event loop's connection: let the server apply
            # them first, so that this thread reads its own writes.
            self._mirror_writes = False
            self._portal.call(self._client.flush)
        return self._direct.call(name, *args, **kwargs)
    # ------------------------------------------------------------------ same as Client
    def authenticate(self, api_key: str | None = None, **credentials: Any) -> dict[str, Any]:
        reply = self._portal.call(functools.partial(self._client.authenticate, api_key, **credentials))
        if self._direct is not None:
            self._direct.reset(dict(self._client._auth_fields))
        return reply

    heartbeat = _blocking("heartbeat")
    request = _blocking("request")
    create_tenant = _blocking("create_tenant")
    delete_tenant = _blocking("delete_tenant")
    list_tenants = _blocking("list_tenants")
    create_service = _blocking("create_service")
    get_service = _blocking("get_service")
    delete_service = _blocking("delete_service")
    list_services = _blocking("list_services")
    read_service = _blocking("read_service")
    allocate_variable = _blocking("allocate_variable")
    deallocate_variable = _blocking("deallocate_variable")
    read_variable = _blocking("read_variable")
    write_variable = _blocking("write_variable")
    report_variable_changes = _blocking("report_variable_changes")

    @property
    def client(self) -> Client:
        """The async client underneath (its methods must run on the portal's loop)."""
        return self._client

    @property
    def portal(self) -> BlockingPortal:
        """The portal of the background event loop, for calling other async code on it."""
        return self._portal

    @property
    def tenant(self) -> str:
        return self._client.tenant

    @property
    def principal(self) -> str | None:
        return self._client.principal

    @property
    def roles(self) -> list[str]:
        return self._client.roles

    @property
    def locality(self) -> str:
        return self._client.locality

    @property
    def closed(self) -> bool:
        return not self._open or self._client.closed

    @property
    def write_errors(self) -> list[Any]:
        """Errors of fire-and-forget mirror writes the server refused, newest last."""
        return self._client.write_errors

    def get_virtual_service_file(self, service: str, *, tenant: str | None = None) -> VirtualServiceFile:
        """As `Client.get_virtual_service_file`; safe to use from the calling thread."""
        vf = self._portal.call(functools.partial(self._client.get_virtual_service_file, service, tenant=tenant))
        if not vf.is_local and not vf.readonly:
            forward = self._in_loop(vf.write)  # the mirror's forwarding write, bound per instance

            @functools.wraps(forward)
            def write(*args: Any) -> Any:
                self._mirror_writes = True
                return forward(*args)

            vf.write = vf.write_variable = write  # type: ignore[method-assign]
        return vf

    def _in_loop(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        portal, loop_thread = self._portal, self._loop_thread

        @functools.wraps(fn)
        def run(*args: Any) -> Any:
            if threading.get_ident() == loop_thread:  # e.g. from an event callback
                return fn(*args)
            return portal.call(fn, *args)

        return run

    def iter_changes(
        self, service: str, *, tenant: str | None = None, timeout: float | None = None
    ) -> Iterator[ServiceUpdate]:
        """``for update in client.iter_changes("svc"): ...``: the server's pushed updates.

        Subscribed before the first ``next()`` returns; ends after ``timeout`` seconds
        without an update (never when None) or when the connection ends (raising its
        error). Leaving the loop unsubscribes.
        """
        items: queue.Queue[Any] = queue.Queue()

        async def pump(*, task_status: Any) -> None:
            async with self._client.subscribe(service, tenant=tenant) as updates:
                task_status.started()
                async for update in updates:
                    items.put(update)

        future, _ = self._portal.start_task(pump)
        future.add_done_callback(lambda _f: items.put(_END))
        try:
            while True:
                try:
                    item = items.get(timeout=timeout)
                except queue.Empty:
                    return
                if item is _END:
                    if not future.cancelled() and future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                    return
                yield item
        finally:
            future.cancel()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Disconnect and stop the background event loop (idempotent)."""
        with self._lock:
            if not self._open:
                return
            self._open = False
        if self._direct is not None:
            self._direct.close()
        try:
            self._client_cm.__exit__(None, None, None)
        except Exception:  # the connection is gone either way
            log.debug("closing the client failed", exc_info=True)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncClient tenant={self.tenant!r} principal={self.principal!r}{' closed' if self.closed else ''}>"


def connect_sync(
    url: str,
    *,
    tenant: str,
    api_key: str | None = None,
    transport: str | None = None,
    ssl_context: Any = None,
    locality: str | None = None,
    config: Config | None = None,
    backend: str = "asyncio",
) -> SyncClient:
    """Connect and authenticate, blocking; arguments as `commy.connect`.

    Use it as a context manager (``with commy.connect_sync(...) as client:``) or call
    ``client.close()``. ``backend`` picks the event loop of the background thread
    (``"asyncio"`` or ``"trio"``).
    """
    portal_cm = start_blocking_portal(backend)
    portal = portal_cm.__enter__()
    try:
        client_cm = portal.wrap_async_context_manager(
            connect(url, tenant=tenant, api_key=api_key, transport=transport, ssl_context=ssl_context,
                    locality=locality, config=config)
        )
        client = client_cm.__enter__()
    except BaseException as exc:
        portal_cm.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return SyncClient(portal_cm, portal, client_cm, client)


__all__ = ["SyncClient", "ServiceInfo", "ServiceUpdate", "VariableInfo", "connect_sync"]
