"""Configuration: defaults < commy.toml < COMMY_* environment < explicit arguments.

The file is the first of: ``--config`` / the ``path`` argument, ``$COMMY_CONFIG``,
``./commy.toml``, ``~/.config/commy/commy.toml``. Unknown keys and bad values raise
`ConfigError` naming the key and where it came from.
"""

import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import attrs

from commy.errors import ConfigError

DEFAULT_DATA_DIR = "~/.cache/commy_virtual_files"


def _one_of(*choices: str):
    def check(inst, attribute, value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")

    return check


def _between(low: float, high: float):
    def check(inst, attribute, value):
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")

    return check


@attrs.define
class KernelConfig:
    name: str | None = None
    variant: str | None = None


@attrs.define
class ClientConfig:
    #: "wss-lean" (hand-written frames, ~half the round trip and start-up time of the
    #: httpx-ws client) or "wss" (httpx-ws); both reach the same server
    transport: str = "wss-lean"
    locality: str = attrs.field(default="auto", validator=_one_of("auto", "local", "remote"))
    url: str | None = None
    api_key: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = 10.0
    #: re-establish a lost connection (backoff with jitter), re-authenticate, resume
    reconnect: bool = True
    #: the blocking client (connect_sync) sends plain requests on a blocking connection
    #: of its own when the transport offers one (one more connection per client)
    blocking_requests: bool = True
    #: the blocking client polls for each answer this long (µs) before it sleeps in
    #: ``recv``: lower latency where waking a sleeping thread is slow (VMs), at the
    #: price of a busy core while it waits; 0 (default): sleep at once
    spin_us: float = attrs.field(default=0.0, validator=_between(0, 10_000))


@attrs.define
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    transport: str = "wss"
    tls: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    #: authenticator plugins tried in this order (first accept wins, a reject ends it)
    authenticators: list[str] = attrs.field(factory=lambda: ["api_key"])
    #: how often subscribed services are checked for changes by local mmap writers (s)
    poll_interval: float = 0.002
    #: how the server notices local mmap writes: ``"poll"`` (every poll_interval) or
    #: ``"futex"`` (a thread per tracked service sleeps on the file's futex: sub-ms,
    #: at one FUTEX_WAKE call per local write; the poller stays as the backstop)
    wakeup: str = attrs.field(default="poll", validator=_one_of("poll", "futex"))
    #: a push that cannot be delivered for this long disconnects the slow client (s)
    push_timeout: float = 10.0
    max_message_size: int = 1 << 20
    #: requests one connection may have in flight before the server stops reading it
    max_inflight: int = 256
    #: largest variable (storage bytes); keeps every pushed value within one message
    max_variable_size: int = 128 * 1024
    #: listener name for the in-process transport (``inproc://<name>``)
    name: str | None = None
    #: refuse the TLS handshake of clients without a certificate (needs client_ca_file);
    #: off by default so API-key clients and mTLS clients can share one listener
    client_cert_required: bool = False
    #: backplane plugin shared with other servers (``"none"``: this server alone, SQLite
    #: metadata; ``"redis"``: see [backplane] and docs/scale-out.md)
    backplane: str = "none"


@attrs.define
class LimitsConfig:
    """Hard limits; each refusal is a LIMIT_EXCEEDED error naming the key (docs/security.md)."""

    #: file size of one service (header + directory + data), bytes
    max_service_size: int = 64 << 20
    #: live variables in one service
    max_variables_per_service: int = 1024
    #: services in one tenant
    max_services_per_tenant: int = 1000
    #: services one connection may subscribe to
    max_subscriptions: int = 1000
    #: coalesced variable updates waiting for one slow client; beyond it the client is
    #: disconnected (memory stays bounded whatever the write rate)
    max_pending_pushes: int = 100_000
    #: failed Authenticate attempts before the server closes the connection
    max_auth_failures: int = 5


@attrs.define
class MtlsConfig:
    """How the ``mtls`` authenticator maps a verified client certificate to a principal.

    Each rule is ``FIELD:PATTERN`` or ``FIELD:PATTERN => TENANT/PRINCIPAL``; FIELD is
    ``cn``, ``dns``, ``email`` or ``uri``; PATTERN may hold ``{tenant}``, ``{principal}``
    and ``*``. The first matching rule wins (docs/security.md).
    """

    rules: list[str] = attrs.field(factory=lambda: ["uri:commy://{tenant}/{principal}"])


@attrs.define
class AccessConfig:
    """Permissions given by config (in addition to the ones stored by admin messages).

    ``grants``: ``"TENANT/PRINCIPAL:SERVICE_GLOB=read|write|admin"``;
    ``roles``: ``"TENANT/PRINCIPAL=tenant-admin"`` or ``"*/PRINCIPAL=server-admin"``.
    """

    grants: list[str] = attrs.field(factory=list)
    roles: list[str] = attrs.field(factory=list)


@attrs.define
class BackplaneConfig:
    """Connection to the engine a backplane runs on (docs/scale-out.md)."""

    #: ``redis://host:port/db``, ``rediss://`` for TLS, ``unix:///path.sock``
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    #: better from the environment (COMMY_BACKPLANE_PASSWORD) than from a file
    password: str | None = None
    #: CA bundle that verifies the server of a ``rediss://`` URL
    ca_file: str | None = None
    #: client certificate and key for Redis mTLS
    cert_file: str | None = None
    key_file: str | None = None
    #: every key starts with it: several deployments can share one Redis
    prefix: str = "commy"
    #: approximate length each service's change stream is trimmed to; a node that falls
    #: further behind resynchronises from the latest-values hash
    stream_maxlen: int = 100_000
    #: seconds one Redis command may take before the node treats Redis as down
    timeout: float = 5.0


@attrs.define
class EventsConfig:
    """Change events (docs/events.md)."""

    #: futex waiter plugin of the fast path (``wakeup="futex"``); None: the highest-ranked
    #: available one (``cffi`` when installed, else the built-in ``ctypes``)
    waiter: str | None = None
    #: fast path: after each wake-up, poll the change sequence this long (µs, at most
    #: 1,000,000) before sleeping again; lower latency for a busy core (events.md)
    spin_us: float = attrs.field(default=0.0, validator=_between(0, 1_000_000))


@attrs.define
class PluginsConfig:
    disable: list[str] = attrs.field(factory=list)


@attrs.define
class Config:
    data_dir: str = DEFAULT_DATA_DIR
    kernel: KernelConfig = attrs.field(factory=KernelConfig)
    client: ClientConfig = attrs.field(factory=ClientConfig)
    server: ServerConfig = attrs.field(factory=ServerConfig)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    mtls: MtlsConfig = attrs.field(factory=MtlsConfig)
    access: AccessConfig = attrs.field(factory=AccessConfig)
    backplane: BackplaneConfig = attrs.field(factory=BackplaneConfig)
    events: EventsConfig = attrs.field(factory=EventsConfig)
    #: where the file part came from (None: no file)
    source: str | None = attrs.field(default=None, eq=False)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()


SECTIONS = {
    "kernel": KernelConfig,
    "client": ClientConfig,
    "server": ServerConfig,
    "plugins": PluginsConfig,
    "limits": LimitsConfig,
    "mtls": MtlsConfig,
    "access": AccessConfig,
    "backplane": BackplaneConfig,
    "events": EventsConfig,
}
TOP_LEVEL = {"data_dir"}

# Environment variables that are not config keys but are read elsewhere.
NON_CONFIG_ENV = {"COMMY_CONFIG", "COMMY_CPU_HIDE", "COMMY_DEBUG", "COMMY_LOG_LEVEL"}
ENV_ALIASES = {
    "COMMY_KERNEL": "kernel.name",
    "COMMY_DISABLE_PLUGINS": "plugins.disable",
    "COMMY_DATA_DIR": "data_dir",
}


def _env_names() -> dict[str, str]:
    names = dict(ENV_ALIASES)
    for section, cls in SECTIONS.items():
        for field in attrs.fields(cls):
            names[f"COMMY_{section}_{field.name}".upper()] = f"{section}.{field.name}"
    return names


def _field_type(key: str) -> Any:
    if key in TOP_LEVEL:
        return str
    section, name = key.split(".", 1)
    for field in attrs.fields(SECTIONS[section]):
        if field.name == name:
            return field.type
    raise KeyError(key)


def _convert(key: str, value: Any, typ: Any, source: str, from_text: bool) -> Any:
    """Coerce ``value`` to the field type; text comes from the environment."""
    where = f"{key!r} (from {source})"
    args = typing.get_args(typ)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (from_text and value == ""):
            return None
        inner = next(a for a in args if a is not type(None))
        return _convert(key, value, inner, source, from_text)
    if origin is list:
        if from_text and isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {where} must be a list of strings, got {value!r}")
        return list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if from_text and str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config key {where} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {where} must be an integer, got {value!r}")
        try:
            return int(value) if from_text or isinstance(value, int) else _bad(where, "an integer", value)
        except ValueError:
            raise ConfigError(f"config key {where} must be an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key {where} must be a number, got {value!r}")
        try:
            return float(value) if from_text or isinstance(value, int | float) else _bad(where, "a number", value)
        except ValueError:
            raise ConfigError(f"config key {where} must be a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key {where}: unsupported type {typ!r}")  # pragma: no cover


def _bad(where: str, what: str, value: Any) -> Any:
    raise ConfigError(f"config key {where} must be {what}, got {value!r}")


def _flatten(data: dict[str, Any], source: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in TOP_LEVEL:
            flat[key] = value
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} (from {source}) must be a table")
            known = {f.name for f in attrs.fields(SECTIONS[key])}
            for sub, subvalue in value.items():
                if sub not in known:
                    raise ConfigError(
                        f"unknown config key '{key}.{sub}' (from {source}); "
                        f"known keys of [{key}]: {', '.join(sorted(known))}"
                    )
                flat[f"{key}.{sub}"] = subvalue
        else:
            raise ConfigError(
                f"unknown config key {key!r} (from {source}); known: "
                f"{', '.join(sorted(TOP_LEVEL | set(SECTIONS)))}"
            )
    return flat


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path | None:
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file not found: {str(p)!r} (from --config)")
        return p
    env = os.environ.get("COMMY_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file not found: {str(p)!r} (from COMMY_CONFIG)")
        return p
    for candidate in (Path("commy.toml"), Path("~/.config/commy/commy.toml").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the effective config. ``overrides`` uses dotted keys (``"kernel.name"``)."""
    values: dict[str, tuple[Any, str, bool]] = {}
    file = find_config_file(path)
    source = None
    if file is not None:
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {source!r}: {exc}") from exc
        for key, value in _flatten(data, source).items():
            values[key] = (value, source, False)
    env = os.environ if environ is None else environ
    env_names = _env_names()
    for name, value in env.items():
        if not name.startswith("COMMY_") or name in NON_CONFIG_ENV:
            continue
        key = env_names.get(name)
        if key is None:
            raise ConfigError(
                f"unknown environment variable {name}; config variables are "
                f"{', '.join(sorted(env_names))}"
            )
        values[key] = (value, f"environment {name}", True)
    for key, value in (overrides or {}).items():
        if key not in TOP_LEVEL and (key.split(".")[0] not in SECTIONS or "." not in key):
            raise ConfigError(f"unknown config key {key!r} (from arguments)")
        values[key] = (value, "arguments", False)

    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for key, (value, src, from_text) in values.items():
        try:
            typ = _field_type(key)
        except KeyError:
            raise ConfigError(f"unknown config key {key!r} (from {src})") from None
        converted = _convert(key, value, typ, src, from_text)
        if "." in key:
            section, name = key.split(".", 1)
            sections[section][name] = (converted, src)
        else:
            top[key] = converted
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        given = sections[section]
        for field in attrs.fields(cls):
            if field.name in given and field.validator is not None:
                value, src = given[field.name]
                try:
                    field.validator(None, field, value)
                except ValueError as exc:
                    raise ConfigError(
                        f"bad value {value!r} for config key '{section}.{field.name}' (from {src}): {exc}"
                    ) from None
        built[section] = cls(**{name: v for name, (v, _src) in given.items()})
    return Config(source=source, **top, **built)
