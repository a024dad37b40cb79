"""Scopes of the `.sgl` → IR lowering: what a name means at a point of a function body.

`Env` holds the entry function's parameters, compile-time constants (unrolled loop variables), `let`
aliases (with the versions of the generated variables they read), run-time loop/fork index variables,
the generated variables visible on this stream (definitely or only on some paths) and the forks by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sglang.lang.sgl import nodes as A
from sglang.compiler.loader import FuncRef

TYPES = ("str", "int", "float", "bool", "list", "dict", "image", "video", "any")
PY_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (tuple, list),
             "dict": (dict,), "image": (str,), "video": (str,)}


@dataclass
class Var:
    definite: bool
    version: int
    pos: A.Pos
    ty: Any = None  # its `lang.ir.types.Ty` (None: generated text, str)


@dataclass
class Fork:
    node: int
    n: int | None
    branch_vars: list[dict[str, Var]]


@dataclass
class Env:
    ref: FuncRef  # the function whose body is being lowered (for its module's symbols)
    params: dict[str, str]  # entry-function parameters -> type name (IR arguments)
    consts: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, tuple[Any, dict[str, int]]] = field(default_factory=dict)  # let -> (expr, versions read)
    locals: set[str] = field(default_factory=set)  # run-time loop / fork index variables
    gen: dict[str, Var] = field(default_factory=dict)
    forks: dict[str, Fork] = field(default_factory=dict)
    role: str | None = None
    calls: tuple[str, ...] = ()
    later_gens: dict[str, A.Pos] = field(default_factory=dict)  # all gen names of the function (for hints)

    def copy(self) -> "Env":
        return dataclasses.replace(self, consts=dict(self.consts), aliases=dict(self.aliases), locals=set(self.locals),
                                   gen={k: dataclasses.replace(v) for k, v in self.gen.items()},
                                   forks=dict(self.forks))


def freeze(v: Any) -> Any:
    return tuple(freeze(x) for x in v) if isinstance(v, list) else v


def all_gens(body: list[A.Stmt], out: dict[str, A.Pos]) -> dict[str, A.Pos]:
    for s in body:
        if isinstance(s, (A.Gen, A.Select)):
            out.setdefault(s.name, s.pos)
        for sub in _sub_bodies(s):
            all_gens(sub, out)
    return out


def _sub_bodies(s: A.Stmt) -> list[list[A.Stmt]]:
    if isinstance(s, (A.Role, A.ForkN, A.For, A.While)):
        return [s.body]
    if isinstance(s, A.ForkBranches):
        return list(s.branches)
    if isinstance(s, A.If):
        return [a.body for a in s.arms] + ([s.orelse] if s.orelse is not None else [])
    return []
