from setuptools import setup
setup(cffi_modules=["commy_kernel_cffi/_build.py:ffibuilder"])
