"""The Redis backplane: one namespace and one change stream shared by several servers.

Keys (``P`` = ``backplane.prefix``):

- ``P:{meta}:*`` — tenants, services, principals, grants, API key hashes, a version
  counter (`commy_backplane_redis.store`), and ``P:{meta}:ctl``, a stream of deletions.
- ``P:{tenant/service}:log`` — the service's change stream. Every committed change on any
  node becomes one entry (``n`` node, ``s`` the node's entry counter, ``p`` the variables
  and values); stream ids give the one order every node applies.
- ``P:{tenant/service}:latest`` — a hash with each variable's type and latest value and
  ``@id``, the stream id it reflects: a node that joins (or lost its place) loads it,
  then follows the stream from ``@id``.

A Lua script appends the entry and updates the hash in one step, so the hash is always
exactly "the stream up to ``@id``". A service's keys share its hash tag, so the script is
legal on Redis Cluster.

Why a node skips some entries: a variable this node changed and published is "pending"
until its own entry comes back from the stream. Entries of other nodes for a pending
variable are older in stream order than that own entry, so applying them would only
flash an older value at local readers; the last entry in stream order wins everywhere.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
from collections import deque
from typing import Any

import anyio
import attrs

from commy import fileformat as ff
from commy.backplane import (
    ORIGIN_BACKPLANE,
    Backplane,
    apply_changes,
    drop_local_service,
    hosted,
    publish_local_changes,
)
from commy.errors import CommyError, PluginError
from commy.protocol import value_from_wire
from commy.vartypes import parse_type

log = logging.getLogger(__name__)

_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', ARGV[2], 's', ARGV[3], 'p', ARGV[4])
local nset = tonumber(ARGV[5])
local ndel = tonumber(ARGV[6])
local i = 7
for _ = 1, nset do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, ndel do
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
while i <= #ARGV do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[2], '@id', id)
return id
"""
ID_FIELD = b"@id"
#: entries one XREAD returns at most; entries one pipeline publishes at most
READ_COUNT = 512
PUBLISH_BATCH = 256
#: XREAD blocks this long; a newly opened service is followed from the next call on
BLOCK_MS = 50
#: entries waiting for Redis before the oldest are dropped (with a warning)
MAX_QUEUE = 1_000_000
MAX_BACKOFF = 1.0

Key = tuple[str, str]


@attrs.define
class _Entry:
    key: Key
    seq: int
    names: list[str]
    args: list[Any]


class RedisBackplane(Backplane):
    name = "redis"
    shared_metadata = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        import redis

        cfg = config.backplane
        self.prefix = cfg.prefix
        self.maxlen = cfg.stream_maxlen
        # Per process, not per host: a restarted node must not look like its old self
        # (other nodes drop entries whose counter they have already seen).
        self.node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._sync = redis.Redis.from_url(cfg.url, **self._options(cfg.timeout))
        self._server: Any = None
        self._queue: deque[_Entry] = deque()
        self._wake: anyio.Event | None = None
        self._counter = itertools.count(1)
        #: (service, variable) → counter of this node's last entry for it not yet read back
        self._pending: dict[tuple[Key, str], int] = {}
        #: followed services → stream id of the last entry applied
        self._follow: dict[Key, str] = {}
        self._resync: set[Key] = set()
        #: (service, node) → highest entry counter applied: a retried publish may repeat
        self._seen: dict[tuple[Key, str], int] = {}
        self._layouts: dict[Key, int] = {}
        #: variable names of each followed service at its last layout seen here: a name
        #: that disappears was deallocated on this node and is announced as removed
        self._dirs: dict[Key, set[str]] = {}
        self._ctl = f"{self.prefix}:{{meta}}:ctl"
        self._ctl_pos = "$"
        #: for tests and the bench: entries published / applied, Redis outages seen
        self.stats = {"published": 0, "applied": 0, "skipped": 0, "outages": 0, "dropped": 0}

    def _options(self, timeout: float, extra: float = 0.0) -> dict[str, Any]:
        cfg = self.config.backplane
        opts: dict[str, Any] = {
            "socket_timeout": timeout + extra,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        if cfg.username:
            opts["username"] = cfg.username
        if cfg.password:
            opts["password"] = cfg.password
        if cfg.url.startswith("rediss://"):
            if cfg.ca_file:
                opts["ssl_ca_certs"] = cfg.ca_file
            if cfg.cert_file:
                opts["ssl_certfile"] = cfg.cert_file
                opts["ssl_keyfile"] = cfg.key_file
        return opts

    # ------------------------------------------------------------------ keys
    def _log_key(self, key: Key) -> str:
        return f"{self.prefix}:{{{key[0]}/{key[1]}}}:log"

    def _latest_key(self, key: Key) -> str:
        return f"{self.prefix}:{{{key[0]}/{key[1]}}}:latest"

    # ------------------------------------------------------------------ contract
    def open_store(self, data_path: Any) -> Any:
        # Its own connection: the store is used from the CLI and from worker threads too.
        import redis

        from commy_backplane_redis.store import RedisStore

        cfg = self.config.backplane
        return RedisStore(redis.Redis.from_url(cfg.url, **self._options(cfg.timeout)), self.prefix)

    def attach(self, server: Any) -> None:
        self._server = server
        server.add_event_sink(self._on_event)

    def prepare_file(self, data_path: Any, row: Any) -> None:
        path = ff.service_path(data_path, row.file)
        if path.exists():
            return
        # Made on another node: same file name (hence service id) here, empty; the
        # latest-values hash fills it in `opened`.
        try:
            ff.create_service_file(data_path, file_name=row.file)
        except FileExistsError:
            pass

    def opened(self, handle: Any) -> None:
        import redis

        key = handle.key
        if not handle.tracking:
            handle.start_tracking()  # local mmap writers' changes must reach the stream
        self._layouts[key] = handle.vf.layout_generation
        self._dirs[key] = set(handle.vf.names())
        try:
            data = self._sync.hgetall(self._latest_key(key))
        except redis.RedisError as exc:
            log.warning("%s/%s: cannot load latest values (%s); loading when Redis is back", *key, exc)
            self._follow[key] = "0-0"
            self._resync.add(key)
            return
        self._follow[key] = self._apply_snapshot(key, data)

    def deleted(self, tenant: str, service: str | None) -> None:
        import redis

        keys = [k for k in self._follow if k[0] == tenant and (service is None or k[1] == service)]
        for key in keys:
            self._follow.pop(key, None)
            self._layouts.pop(key, None)
            self._dirs.pop(key, None)
        try:
            if service is not None:
                self._sync.delete(self._log_key((tenant, service)))
                self._sync.delete(self._latest_key((tenant, service)))
            else:
                for k in self._sync.scan_iter(match=f"{self.prefix}:{{{tenant}/*}}:*", count=1000):
                    self._sync.delete(k)
            self._sync.xadd(self._ctl, {"op": "delete", "n": self.node, "t": tenant, "s": service or ""},
                            maxlen=10_000, approximate=True)
        except redis.RedisError as exc:
            log.warning("telling other nodes about the deletion of %s/%s failed: %s", tenant, service, exc)

    def close(self) -> None:
        try:
            self._sync.close()
        except Exception:  # closing a dead connection may fail; it is gone either way
            log.debug("closing the Redis connection failed", exc_info=True)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        import redis.asyncio
        import sniffio

        if sniffio.current_async_library() != "asyncio":
            raise PluginError(
                "the redis backplane runs on redis-py's asyncio client: serve on the asyncio "
                "backend (uvloop is fine), not trio"
            )
        cfg = self.config.backplane
        pub = redis.asyncio.Redis.from_url(cfg.url, **self._options(cfg.timeout))
        # The follower's socket must outlive one blocking XREAD.
        follow = redis.asyncio.Redis.from_url(cfg.url, **self._options(cfg.timeout, BLOCK_MS / 1000 + 1))
        self._wake = anyio.Event()
        if self._queue:
            self._wake.set()
        try:
            self._open_hosted()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._publish_loop, pub)
                tg.start_soon(self._follow_loop, follow)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                for client in (pub, follow):
                    try:
                        await client.aclose()
                    except Exception:
                        log.debug("closing a Redis connection failed", exc_info=True)

    def _open_hosted(self) -> None:
        """Follow every service this node has a file of (mapped readers may be waiting)."""
        server = self._server
        try:
            rows = server.store.list_services()
        except CommyError as exc:
            log.warning("cannot list services (%s); they are followed once clients open them", exc)
            return
        for row in rows:
            if (ff.service_path(server.data_path, row.file)).exists():
                try:
                    server._open(row.tenant, row.name)
                except CommyError as exc:
                    log.warning("cannot open %s/%s: %s", row.tenant, row.name, exc)

    # ------------------------------------------------------------------ publishing
    def _on_event(self, event: Any) -> None:
        key = (event.tenant, event.service)
        if event.origin == ORIGIN_BACKPLANE:
            # It came from the stream: publishing it again would echo forever. Its layout
            # (variables allocated or removed elsewhere) is now this node's too.
            if self._layouts.get(key) != event.layout:
                handle = hosted(self._server, *key)
                if handle is not None:
                    self._layouts[key] = event.layout
                    self._dirs[key] = set(handle.vf.names())
            return
        seq = next(self._counter)
        values = []
        hset: list[str] = []
        for v in event.variables:
            wire = v.to_wire()["value"]
            values.append([v.name, v.type, wire])
            hset += [v.name, json.dumps([v.type, wire])]
            self._pending[(key, v.name)] = seq
        payload: dict[str, Any] = {"v": values}
        hsetnx: list[str] = []
        removed: list[str] = []
        if self._layouts.get(key) != event.layout:
            self._layouts[key] = event.layout
            handle = hosted(self._server, *key)
            if handle is not None:
                infos = handle.vf.variables()
                payload["d"] = [[n, i.type, i.persistent] for n, i in infos.items()]
                for n, i in infos.items():
                    hsetnx += [n, json.dumps([i.type, None])]
                previous = self._dirs.get(key)
                self._dirs[key] = set(infos)
                if previous:
                    removed = sorted(previous - set(infos))
                    if removed:
                        payload["x"] = removed
                        for n in removed:
                            self._pending.pop((key, n), None)
        if not values and "d" not in payload:
            return
        args = [self.maxlen, self.node, seq, json.dumps(payload, separators=(",", ":")), len(values), len(removed),
                *hset, *removed, *hsetnx]
        self._queue.append(_Entry(key, seq, [v.name for v in event.variables], args))
        if len(self._queue) > MAX_QUEUE:
            dropped = self._queue.popleft()
            self.stats["dropped"] += 1
            for name in dropped.names:
                if self._pending.get((dropped.key, name)) == dropped.seq:
                    del self._pending[(dropped.key, name)]
            if self.stats["dropped"] % 10_000 == 1:
                log.error("Redis unreachable too long: dropped %d unpublished changes", self.stats["dropped"])
        if self._wake is not None:
            self._wake.set()

    async def _publish_loop(self, client: Any) -> None:
        import redis

        script = client.register_script(_PUBLISH)
        backoff = 0.05
        down = False
        while True:
            if not self._queue:
                assert self._wake is not None
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch = list(itertools.islice(self._queue, PUBLISH_BATCH))
            try:
                if len(batch) == 1:
                    e = batch[0]
                    await script(keys=[self._log_key(e.key), self._latest_key(e.key)], args=e.args)
                else:
                    pipe = client.pipeline(transaction=False)
                    for e in batch:
                        await script(keys=[self._log_key(e.key), self._latest_key(e.key)], args=e.args, client=pipe)
                    await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                # Retried in order until Redis takes it: acknowledged writes are not lost.
                # A retry may repeat entries Redis already took; followers drop repeats.
                if not down:
                    down = True
                    self.stats["outages"] += 1
                    log.warning("publishing to Redis failed (%s); %d changes wait, retrying", exc, len(self._queue))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if down:
                log.warning("publishing to Redis works again")
                down = False
            backoff = 0.05
            last = batch[-1].seq
            while self._queue and self._queue[0].seq <= last:
                self._queue.popleft()
            self.stats["published"] += len(batch)

    # ------------------------------------------------------------------ following
    async def _follow_loop(self, client: Any) -> None:
        import redis

        backoff = 0.05
        down = False
        names: dict[str, Key] = {}
        while True:
            try:
                if self._resync:
                    for key in list(self._resync):
                        if key in self._follow:
                            data = await client.hgetall(self._latest_key(key))
                            self._follow[key] = self._apply_snapshot(key, data)
                        self._resync.discard(key)
                streams: dict[str, str] = {}
                for key, pos in self._follow.items():
                    name = self._log_key(key)
                    names[name] = key
                    streams[name] = pos
                streams[self._ctl] = self._ctl_pos
                reply = await client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
            except (redis.RedisError, OSError) as exc:
                if not down:
                    down = True
                    log.warning("following Redis failed (%s); resuming from the last stream ids", exc)
                # The latest-values hash covers whatever the stream may have lost.
                self._resync.update(self._follow)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if down:
                log.warning("following Redis works again")
                down = False
            backoff = 0.05
            for stream, entries in reply or ():
                stream = stream.decode() if isinstance(stream, bytes) else stream
                if stream == self._ctl:
                    for entry_id, fields in entries:
                        self._ctl_pos = _s(entry_id)
                        self._on_control(fields)
                    continue
                key = names.get(stream)
                if key is None or key not in self._follow:
                    continue
                for entry_id, fields in entries:
                    if key not in self._follow:
                        break  # deleted meanwhile
                    self._follow[key] = _s(entry_id)
                    try:
                        self._on_entry(key, fields)
                    except CommyError as exc:
                        log.warning("%s/%s: change %s not applied: %s", *key, _s(entry_id), exc)

    def _on_entry(self, key: Key, fields: dict[bytes, bytes]) -> None:
        node = fields[b"n"].decode()
        seq = int(fields[b"s"])
        if seq <= self._seen.get((key, node), 0):
            return  # a repeat from a retried publish
        self._seen[(key, node)] = seq
        handle = hosted(self._server, *key)
        if handle is None:
            return
        publish_local_changes(self._server, handle)  # decide against the newest local state
        payload = json.loads(fields[b"p"])
        own = node == self.node
        values = []
        for name, spec, wire in payload["v"]:
            pk = (key, name)
            if own:
                if self._pending.get(pk) != seq:
                    continue  # a newer write of ours follows in the stream
                del self._pending[pk]
            elif pk in self._pending:
                self.stats["skipped"] += 1
                continue
            values.append((name, spec, value_from_wire(parse_type(spec), name, wire)))
        directory = [tuple(d) for d in payload.get("d", ())]
        removed = [] if own else payload.get("x", [])
        if values or directory or removed:
            apply_changes(self._server, key[0], key[1], values, directory, removed)
        self.stats["applied"] += 1

    def _apply_snapshot(self, key: Key, data: dict[bytes, bytes]) -> str:
        """Bring the local file to the latest-values hash; returns its stream id."""
        pos = _s(data.pop(ID_FIELD, b"0-0"))
        handle = hosted(self._server, *key)
        if handle is None:
            return pos
        publish_local_changes(self._server, handle)
        values = []
        directory = []
        for raw_name, raw in data.items():
            name = raw_name.decode()
            spec, wire = json.loads(raw)
            if wire is None:
                directory.append((name, spec, True))
            elif (key, name) not in self._pending:
                values.append((name, spec, value_from_wire(parse_type(spec), name, wire)))
        if values or directory:
            apply_changes(self._server, key[0], key[1], values, directory)
        return pos

    def _on_control(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"op") != b"delete" or fields.get(b"n", b"").decode() == self.node:
            return
        tenant = fields[b"t"].decode()
        service = fields.get(b"s", b"").decode() or None
        for key in [k for k in self._follow if k[0] == tenant and (service is None or k[1] == service)]:
            self._follow.pop(key, None)
            self._layouts.pop(key, None)
            self._dirs.pop(key, None)
        drop_local_service(self._server, tenant, service)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value



