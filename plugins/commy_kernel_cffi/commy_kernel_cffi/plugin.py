"""Entry module of the ``kernel_cffi`` plugin.

Plugin discovery imports this module, so it imports nothing heavy: the compiled library
is loaded only when the provider is first asked about its variants.
"""

from commy.hookspecs import hookimpl


def _provider():
    from commy_kernel_cffi.kernel import CffiKernelProvider

    return CffiKernelProvider()


@hookimpl
def commy_register_kernels(register):
    register("cffi", _provider)
