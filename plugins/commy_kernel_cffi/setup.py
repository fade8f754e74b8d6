from setuptools import setup  # noqa: I001 - kept to two lines on purpose
setup(cffi_modules=["commy_kernel_cffi/_build.py:ffibuilder", "commy_kernel_cffi/_build_futex.py:ffibuilder"])
