"""Build the `workbench` library and its Cython kernels (`workbench_ext`).

Each kernel module is compiled once with portable flags; the instruction-set specific code
paths live in C headers compiled with per-function target attributes, and are chosen at run
time by `workbench_ext.cpu` (so one build runs on any x86-64 CPU).
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

OPENMP = [] if sys.platform == "darwin" else ["-fopenmp"]
COMMON_ARGS = ["-O3", "-std=c11", "-fno-strict-aliasing", *OPENMP]


def kernel(name: str) -> Extension:
    return Extension(
        f"workbench_ext.{name}",
        [f"workbench_ext/{name}.pyx"],
        include_dirs=[np.get_include(), "workbench_ext"],
        # every header: the .pyx files name one, which includes the others, and a changed
        # header must rebuild every module that may include it
        depends=sorted(glob.glob("workbench_ext/*.h")),
        extra_compile_args=COMMON_ARGS,
        extra_link_args=OPENMP,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


# Add a module here when a new .pyx lands in workbench_ext/.
KERNEL_MODULES = [m[:-4] for m in sorted(os.listdir("workbench_ext")) if m.endswith(".pyx")]

setup(
    name="workbench",
    version="0.1.0",
    description="Compression workbench for transformer models on CPUs",
    packages=find_packages(include=["workbench", "workbench.*", "workbench_ext"]),
    package_data={"workbench_ext": ["*.h", "*.pxd", "*.pyx", "*.pxi"], "workbench": ["py.typed"]},
    ext_modules=cythonize(
        [kernel(m) for m in KERNEL_MODULES],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    ),
    entry_points={"console_scripts": ["workbench=workbench.cli:main"]},
    python_requires=">=3.10",
)
