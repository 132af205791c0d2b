# cffi_modules is only accepted by setup(), not by [tool.setuptools]; all
# other metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
