"""Program IR: op nodes on a graph (`graph`), expressions (`expr`), validation and canonical form (`check`).

`from sglang.lang.ir import X` gives the graph module's names; the submodules import each other directly.
"""
from sglang.lang.ir.graph import *  # noqa: F401,F403
