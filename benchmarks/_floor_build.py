"""Compile ``_floor.pyx`` at benchmark time, into a cache outside the repository."""

from __future__ import annotations

import hashlib
import importlib
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType

FLOOR_SOURCE = Path(__file__).with_name("_floor.pyx")


def build_floor() -> ModuleType:
    """Build (once per source and interpreter) and import the floor module.

    The build goes to a directory under the system's temporary directory,
    keyed by the source's hash and the interpreter's ABI, so nothing is
    written into the repository. Compiled with -O3, like the core.
    """
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    source = FLOOR_SOURCE.read_bytes()
    key = hashlib.sha256(
        source + sysconfig.get_config_var("EXT_SUFFIX").encode()
    ).hexdigest()[:16]
    build_dir = Path(tempfile.gettempdir()) / f"llm-budget-window-floor-{key}"
    build_dir.mkdir(exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    if not (build_dir / f"_floor{suffix}").exists():
        pyx = build_dir / "_floor.pyx"
        pyx.write_bytes(source)
        extension = Extension("_floor", [str(pyx)], extra_compile_args=["-O3"])
        modules = cythonize([extension], quiet=True, build_dir=str(build_dir))
        distribution = Distribution({"ext_modules": modules})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(build_dir)
        command.build_temp = str(build_dir / "temp")
        distribution.run_command("build_ext")
    if str(build_dir) not in sys.path:
        sys.path.insert(0, str(build_dir))
    return importlib.import_module("_floor")
