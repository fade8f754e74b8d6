"""Entry module of the WSS transport plugin.

Plugin discovery imports this module in every commy process, so it imports nothing
heavy: httpx, wsproto and the implementation load when a transport is first built.
"""

from commy import hookimpl


def _wss():
    from commy_transport_wss.transport import WssTransport

    return WssTransport()


def _wss_lean():
    from commy_transport_wss.transport import LeanWssTransport

    return LeanWssTransport()


@hookimpl
def commy_register_transports(register):
    register("wss", _wss)
    register("wss-lean", _wss_lean)
