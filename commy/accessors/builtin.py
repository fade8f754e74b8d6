"""Built-in accessor plugin: the local mmap accessor and the remote mirror."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_accessors(register):
    from commy.accessors.local import LocalFileAccessor
    from commy.accessors.remote import RemoteBufferAccessor

    register("local", LocalFileAccessor)
    register("remote", RemoteBufferAccessor)
