"""Built-in transport plugin: the in-process transport."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_transports(register):
    from commy.transports.inprocess import InProcessTransport

    register("inprocess", InProcessTransport)
