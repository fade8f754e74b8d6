"""commy: shared-memory coordination for Python.

Processes share named *services*: self-describing memory-mapped files of typed
variables. See README.md and docs/.
"""

from commy.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
