"""Entry module of the ``kernel_cffi`` plugin.

Plugin discovery imports this module, so it imports nothing heavy: the compiled
libraries are loaded only when a provider is first used.
"""

from commy.hookspecs import hookimpl


def _provider():
    from commy_kernel_cffi.kernel import CffiKernelProvider

    return CffiKernelProvider()


def _waiter_provider():
    from commy_kernel_cffi.waiter import CffiWaiterProvider

    return CffiWaiterProvider()


@hookimpl
def commy_register_kernels(register):
    register("cffi", _provider)


@hookimpl
def commy_register_waiters(register):
    register("cffi", _waiter_provider)
