"""Build the compiled core of specdec_fast.

Compiler directives are set here, once, not in each .pyx header.  Set
SPECDEC_FAST_DEBUG=1 to build with bounds checks, wraparound and
initialisation checks back on.

Exactness: the kernel promises the reference's tokens bit for bit, so the
build never uses -ffast-math and turns off floating-point contraction
(fused multiply-add changes rounding).  No -march=native: wheels must run on
any CPU of their platform.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SPECDEC_FAST_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

if sys.platform == "win32":
    compile_args = ["/O2", "/fp:precise"]
else:
    compile_args = ["-O0" if DEBUG else "-O3", "-ffp-contract=off", "-fno-fast-math"]
    if DEBUG:
        compile_args.append("-g")

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]


def extension(name):
    return Extension(
        f"specdec_fast.{name}",
        [f"src/specdec_fast/{name}.pyx"],
        include_dirs=["src", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
    )


setup(
    ext_modules=cythonize(
        [extension(name) for name in ("_rng", "_kernel", "_core", "_batch", "_simulate")],
        compiler_directives=directives,
        include_path=["src"],
    ),
)
