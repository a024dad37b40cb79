"""The language surface: the Python API (gen, select, fork, roles), program state and the eager
interpreter, the IR node types, and the `.sgl` grammar and parser (syntax and error messages)."""
