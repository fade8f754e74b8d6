"""Entry module of the ``kernel_numba`` plugin.

Plugin discovery imports this module, so it must not import numba (0.3 s) or numpy:
both are imported on first use of the provider.
"""

from commy.hookspecs import hookimpl


def _provider():
    from commy_kernel_numba.kernel import NumbaKernelProvider

    return NumbaKernelProvider()


@hookimpl
def commy_register_kernels(register):
    register("numba", _provider)
