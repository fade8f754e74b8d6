"""File accessors: how a VirtualServiceFile reaches its bytes (seed: FileAccessor trait)."""

from commy.accessors.base import FileAccessor

__all__ = ["FileAccessor"]
