"""Plugin discovery: built-ins first, then entry points of group ``commy``.

Plugins named in the disable list (config ``plugins.disable``, env
``COMMY_DISABLE_PLUGINS``) are blocked before anything is imported, so a broken or
unwanted plugin never runs.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from functools import partial

import attrs
import pluggy

from commy import hookspecs
from commy.errors import PluginError
from commy.registry import Registry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "commy"
KINDS = ("kernels", "accessors", "transports", "authenticators", "backplanes", "waiters")

# Built-ins go through the same hooks as third-party plugins.
BUILTIN_PLUGINS = {
    "builtin_kernels": "commy.kernels.builtin",
    "builtin_accessors": "commy.accessors.builtin",
    "builtin_transports": "commy.transports.builtin",
    "builtin_authenticators": "commy.auth.builtin",
    "builtin_backplanes": "commy.backplane",
    "builtin_waiters": "commy.futex",
}


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool
    registered: dict[str, list[str]]


class Plugins:
    """The loaded plugins and one registry per kind."""

    def __init__(self, pm: pluggy.PluginManager, blocked: Iterable[str]) -> None:
        self.pm = pm
        self.blocked = sorted(set(blocked))
        self.registries = {kind: Registry(kind[:-1]) for kind in KINDS}
        self._collect()

    @property
    def kernels(self) -> Registry:
        return self.registries["kernels"]

    @property
    def accessors(self) -> Registry:
        return self.registries["accessors"]

    @property
    def transports(self) -> Registry:
        return self.registries["transports"]

    @property
    def authenticators(self) -> Registry:
        return self.registries["authenticators"]

    @property
    def backplanes(self) -> Registry:
        return self.registries["backplanes"]

    @property
    def waiters(self) -> Registry:
        return self.registries["waiters"]

    def _collect(self) -> None:
        # Call every implementation on its own so each registration is attributed
        # to the plugin that made it (needed for the duplicate-name error).
        for kind, registry in self.registries.items():
            caller = getattr(self.pm.hook, f"commy_register_{kind}")
            for impl in caller.get_hookimpls():
                register = partial(_register_from, registry, impl.plugin_name)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:  # a plugin's bug must name the plugin
                    raise PluginError(
                        f"plugin {impl.plugin_name!r} failed in commy_register_{kind}: {exc!r}"
                    ) from exc

    def info(self) -> list[PluginInfo]:
        dists = {self.pm.get_name(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:  # a blocked name
                continue
            registered = {
                kind: [r.name for r in reg if r.plugin == name] for kind, reg in self.registries.items()
            }
            registered = {k: v for k, v in registered.items() if v}
            dist = dists.get(name)
            if dist is not None:
                dist_name, version = dist.metadata["name"], dist.version
            else:
                from commy import __version__

                dist_name, version = "commy", __version__
            out.append(PluginInfo(name, dist_name, version, name in BUILTIN_PLUGINS, registered))
        return out


def _register_from(registry: Registry, plugin_name: str, name: str, factory) -> None:
    registry.add(name, factory, plugin_name)


def load_plugins(
    disable: Iterable[str] = (),
    entry_points: bool = True,
    extra: Iterable[tuple[str, object]] = (),
) -> Plugins:
    """Build a plugin manager: built-ins, then installed entry points, minus ``disable``.

    ``extra`` registers further ``(name, module_or_object)`` plugins after the entry
    points (embedding applications and tests use it); they obey the disable list too.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = [name for name in disable if name]
    for name in blocked:
        pm.set_blocked(name)
    for name, module in BUILTIN_PLUGINS.items():
        if pm.is_blocked(name):
            continue
        pm.register(importlib.import_module(module), name=name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:
            raise PluginError(f"loading entry points of group {ENTRY_POINT_GROUP!r} failed: {exc!r}") from exc
    for name, plugin in extra:
        if not pm.is_blocked(name):
            pm.register(plugin, name=name)
    plugins = Plugins(pm, blocked)
    log.debug("plugins loaded: %s", [n for n, _ in pm.list_name_plugin()])
    return plugins


_cache: dict[tuple[str, ...], Plugins] = {}


def get_plugins(disable: Iterable[str] = ()) -> Plugins:
    """Plugins for this disable list, loaded once per process."""
    key = tuple(sorted(set(disable)))
    plugins = _cache.get(key)
    if plugins is None:
        plugins = _cache[key] = load_plugins(key)
    return plugins
