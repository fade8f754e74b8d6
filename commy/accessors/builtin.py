"""Built-in accessor plugin: the local mmap accessor."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_accessors(register):
    from commy.accessors.local import LocalFileAccessor

    register("local", LocalFileAccessor)
