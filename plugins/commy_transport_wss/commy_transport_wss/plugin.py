"""Entry module of the WSS transport plugin (kept cheap to import).

The transport itself arrives with the server/protocol issue; until then this
plugin registers nothing, so `commy plugins` shows it loaded and empty.
"""

from commy import hookimpl


@hookimpl
def commy_register_transports(register):  # noqa: ARG001 - filled by the server issue
    return None
