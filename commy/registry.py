"""Name → factory registries, one per kind of plugin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import attrs

from commy.errors import PluginError


@attrs.frozen
class Registration:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str


class Registry:
    """Maps a name to a factory and remembers which plugin registered it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Registration] = {}

    def add(self, name: str, factory: Callable[..., Any], plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r} registered {self.kind} {name!r} with a non-callable factory")
        existing = self._entries.get(name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by plugin {existing.plugin!r} "
                f"and by plugin {plugin!r}; disable one of them (plugins.disable / COMMY_DISABLE_PLUGINS)"
            )
        self._entries[name] = Registration(self.kind, name, factory, plugin)

    def get(self, name: str) -> Callable[..., Any]:
        return self.registration(name).factory

    def registration(self, name: str) -> Registration:
        try:
            return self._entries[name]
        except KeyError:
            choices = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(f"unknown {self.kind} {name!r}; choices: {choices}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self._entries.values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self._entries)
