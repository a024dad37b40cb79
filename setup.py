"""Maps the top-level folders onto one import package, `sglang` (sglang.runtime <- runtime/, ...).

Sub-packages are found by walking the folders, so new ones need no edit here.
"""
from __future__ import annotations

import os

from setuptools import setup

LAYERS = ("kernels", "runtime", "lang", "compiler", "stdlib")


def find_packages() -> list[str]:
    packages = ["sglang"]
    for layer in LAYERS:
        for root, dirs, files in os.walk(layer):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if "__init__.py" in files:
                packages.append("sglang." + root.replace(os.sep, "."))
    return packages


setup(packages=find_packages())
