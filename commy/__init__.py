"""commy: shared-memory coordination for Python.

Processes share named *services*: self-describing memory-mapped files of typed
variables. See README.md and docs/.
"""

from commy.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]


def __getattr__(name: str):
    # Lazy: plugin entry modules import `commy` and must stay cheap to load.
    if name == "connect":
        from commy.client import connect

        return connect
    if name == "connect_sync":
        from commy.sync import connect_sync

        return connect_sync
    if name == "Server":
        from commy.server import Server

        return Server
    raise AttributeError(f"module 'commy' has no attribute {name!r}")
