"""Hook specifications: one registration hook per kind of plugin.

Each hook receives a ``register(name, factory)`` callable. Built-in implementations
use these hooks exactly like third-party plugins do.
"""

from __future__ import annotations

import pluggy

PROJECT = "commy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def commy_register_kernels(register):
    """Register diff kernel providers: ``register("name", factory)``.

    ``factory()`` returns a `commy.kernels.KernelProvider`.
    """


@hookspec
def commy_register_accessors(register):
    """Register file accessors: ``register("name", factory)``.

    ``factory(...)`` returns a `commy.accessors.FileAccessor`.
    """


@hookspec
def commy_register_transports(register):
    """Register transports: ``register("name", factory)``."""


@hookspec
def commy_register_authenticators(register):
    """Register authenticators: ``register("name", factory)``."""


@hookspec
def commy_register_backplanes(register):
    """Register backplanes: ``register("name", factory)``.

    ``factory(config)`` returns a `commy.backplane.Backplane`; config ``server.backplane``
    picks one (default ``"none"``: a single node with SQLite metadata).
    """


@hookspec
def commy_register_waiters(register):
    """Register fast-path waiters: ``register("name", factory)``.

    ``factory()`` returns a `commy.waiters.WaiterProvider` (futex wait/wake on a service
    file's change-sequence word); config ``events.waiter`` picks one, else the highest
    ``rank`` that is available.
    """
