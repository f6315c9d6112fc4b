"""Build the compiled core.

Set LLM_BUDGET_WINDOW_NO_EXTENSIONS=1 to install the pure-Python twin only.
Set LLM_BUDGET_WINDOW_CYTHON_TRACE=1 for a build that traces Cython lines
(coverage and profiling; slow).
"""

import os

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("LLM_BUDGET_WINDOW_NO_EXTENSIONS"))
CYTHON_TRACE = bool(os.environ.get("LLM_BUDGET_WINDOW_CYTHON_TRACE"))


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    macros = [("CYTHON_TRACE_NOGIL", "1")] if CYTHON_TRACE else []
    core = Extension(
        "llm_budget_window._budget_c",
        ["src/_budget_c.pyx"],
        include_dirs=["src"],
        define_macros=macros,
        extra_compile_args=["/O2"] if os.name == "nt" else ["-O3"],
    )
    directives = {"linetrace": True} if CYTHON_TRACE else {}
    return cythonize([core], compiler_directives=directives, include_path=["src"])


setup(ext_modules=extensions())
