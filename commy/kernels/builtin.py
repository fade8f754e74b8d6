"""Built-in kernel plugin: the pure-Python fallback."""

from commy.hookspecs import hookimpl


@hookimpl
def commy_register_kernels(register):
    from commy.kernels.python import PythonKernelProvider

    register("python", PythonKernelProvider)
