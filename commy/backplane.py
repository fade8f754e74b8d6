"""Backplanes: several commy servers sharing one namespace and one change stream.

A backplane is the fifth kind of plugin (hook ``commy_register_backplanes``, config
``server.backplane``). The server core talks to it through `Backplane`:

- ``open_store(data_path)``: where metadata (tenants, services, principals, grants, key
  hashes) lives. The default keeps it in this node's SQLite file; a shared backplane
  returns a store every node sees.
- ``attach(server)``: called once when the server is built. A backplane adds an event
  sink here (`Server.add_event_sink`) to publish each committed `ChangeEvent`.
- ``run()``: a task for the server's lifetime (publishing, following other nodes).
- ``prepare_file`` / ``opened`` / ``deleted``: a service's file is about to be opened on
  this node (create it if the service was made elsewhere), was opened (catch up and start
  following its changes), was deleted here (tell the other nodes).

Changes followed from other nodes come back in through `apply_changes`, which writes
them to the local ``.mem`` file (so local mmap readers see them) and hands them to the
server's sinks with origin ``"backplane"`` (so remote subscribers get them pushed and no
backplane publishes them a second time).

The default, ``"none"``, is a single server: every hook does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import anyio

from commy.hookspecs import hookimpl

if TYPE_CHECKING:
    from commy.config import Config
    from commy.server.core import Server, ServiceHandle
    from commy.server.store import ServiceRow, Store

log = logging.getLogger(__name__)

#: origin of a `ChangeEvent` that came from another node through the backplane
ORIGIN_BACKPLANE = "backplane"


class Backplane:
    """The contract, and the single-node default (``"none"``)."""

    name = "none"
    #: True when metadata lives in the backplane (shared by every node): the server then
    #: leaves other nodes' ephemeral services alone at start-up
    shared_metadata = False

    def __init__(self, config: Config) -> None:
        self.config = config

    def open_store(self, data_path: str | os.PathLike[str]) -> Store:
        from commy.server.store import Store

        return Store(data_path)

    def attach(self, server: Server) -> None:
        """The server is built; subscribe to its committed changes here."""

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Runs while the server serves; ``task_status.started()`` once ready."""
        task_status.started()

    def prepare_file(self, data_path: str | os.PathLike[str], row: ServiceRow) -> None:
        """Before ``row``'s file is opened on this node."""

    def opened(self, handle: ServiceHandle) -> None:
        """``handle``'s service was opened on this node."""

    def deleted(self, tenant: str, service: str | None) -> None:
        """A service (``service`` None: a whole tenant) was deleted through this node."""

    def close(self) -> None:
        """The server closes."""


@hookimpl
def commy_register_backplanes(register):
    register("none", Backplane)


def create_backplane(config: Config, plugins: Any) -> Backplane:
    """The backplane config names, built once per server."""
    return plugins.backplanes.get(config.server.backplane)(config)


def open_store(config: Config) -> Store:
    """The metadata store of ``config`` (the offline CLI uses it: keys, tenants)."""
    from commy.plugins import get_plugins

    backplane = create_backplane(config, get_plugins(config.plugins.disable))
    return backplane.open_store(config.data_path)


# ---------------------------------------------------------------------- helpers
# Backplane plugins act on the server through these, not through its private state.


def hosted(server: Server, tenant: str, service: str) -> ServiceHandle | None:
    """The open service ``tenant/service`` on this node, or None."""
    return server._services.get((tenant, service))


def publish_local_changes(server: Server, handle: ServiceHandle) -> None:
    """Publish what local mmap writers changed since the last scan (before deciding
    whether a value from another node may overwrite it)."""
    if handle.tracking and handle.vf.change_seq != handle.last_seq:
        server._scan(handle)


def apply_changes(
    server: Server,
    tenant: str,
    service: str,
    values: Iterable[tuple[str, str, Any]],
    directory: Iterable[tuple[str, str, bool]] = (),
    removed: Iterable[str] = (),
) -> list[str]:
    """Apply changes made on another node to this node's file; returns the changed names.

    ``values``: ``(name, type spec, decoded value)``; ``directory``: variables that must
    exist, ``(name, type spec, persistent)``; ``removed``: variables deallocated there
    (gone here too, if present). Missing variables are allocated. Local
    changes not yet published are published first, so applying a value from elsewhere
    never hides one made here; what changed is then announced to local mmap readers (the
    file's own commit protocol) and to the server's sinks with origin ``"backplane"``.
    """
    handle = hosted(server, tenant, service)
    if handle is None:
        return []
    vf = handle.vf
    publish_local_changes(server, handle)  # a local write goes out before we overwrite
    layout = vf.layout_generation
    changed: list[str] = []
    with vf.batch():  # local readers are woken once for the whole entry
        for name in removed:
            if name in vf:
                vf.deallocate(name)
        for name, spec, persistent in directory:
            if name not in vf:
                vf.allocate(name, spec, persistent=persistent)
        for name, spec, value in values:
            if name not in vf:
                vf.allocate(name, spec, initial=value)
                changed.append(name)
                continue
            if vf.type_of(name).spec != spec:
                log.warning("%s/%s: variable %r is %s here but %s on another node; not applied",
                            tenant, service, name, vf.type_of(name).spec, spec)
                continue
            if value is None or vf.read(name) == value:
                continue
            vf.write(name, value)
            changed.append(name)
    if not changed:
        if vf.layout_generation == layout:
            return changed
        vf.commit()  # only the directory grew: still wake local readers
    extra: list[str] = []
    if not handle.tracking:
        handle.start_tracking()
    elif vf.layout_generation == layout:
        vf.update_shadow(handle.ranges(changed))  # no diff: we know what we wrote
    else:
        # The directory grew: one diff grows the shadow; anything else it finds is a
        # local write that raced with us and still has to be published.
        extra = [n for n in vf.detect_changes() if n not in changed]
    seq = vf.change_seq
    handle.last_seq = seq
    handle.last_layout = vf.layout_generation
    server.publish(server._event(handle, changed, seq, ORIGIN_BACKPLANE))
    if extra:
        server.publish(server._event(handle, extra, seq, "diff"))
    return changed


def drop_local_service(server: Server, tenant: str, service: str | None) -> None:
    """Forget a service deleted on another node (``service`` None: a whole tenant).

    Its metadata is already gone from the shared store; this closes the handle, detaches
    its subscribers and removes this node's file.
    """
    keys = [k for k in list(server._services) if k[0] == tenant and (service is None or k[1] == service)]
    for key in keys:
        handle = server._services.pop(key)
        for session in handle.subscribers.values():
            session.subscribed.discard(key)
        path = handle.vf.path
        handle.vf.close()
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s (deleted on another node): %s", path, exc)
        log.info("service %s/%s was deleted on another node", *key)
