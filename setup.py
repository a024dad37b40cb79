"""Maps the top-level folders onto one import package, `sglang` (sglang.runtime <- runtime/, ...).

Sub-packages are found by walking the folders, so new ones need no edit here.
"""
from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

LAYERS = ("kernels", "runtime", "lang", "compiler", "stdlib")


def find_packages() -> list[str]:
    packages = ["sglang"]
    for layer in LAYERS:
        for root, dirs, files in os.walk(layer):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if "__init__.py" in files:
                packages.append("sglang." + root.replace(os.sep, "."))
    return packages


class BuildPy(build_py):
    """The repository root is the `sglang` package's folder: keep this build script out of it."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "sglang" and m[1] == "setup")]


setup(packages=find_packages(), cmdclass={"build_py": BuildPy})
