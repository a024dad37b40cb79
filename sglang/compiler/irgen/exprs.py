"""Expression lowering for `.sgl` → IR (`ExprLowerer`, owned by `compiler.irgen.build.Lowerer`).

Resolves names (constants, `let` aliases, loop/fork indices, generated variables, parameters), reads of
fork branch variables (`t[k].x`), builtin calls (also method style, `x.strip()`), and folds constants.
Every unresolvable name is an `SglSemanticError` at its position, with a did-you-mean hint; every ill-typed
expression (`lang.ir.types`: `q + k` with a str and an int) one at the operator, with a hint.
"""
from __future__ import annotations

import difflib
from typing import Any

from sglang.lang import ir
from sglang.lang.ir import expr as X
from sglang.lang.ir import types as T
from sglang.lang.sgl import nodes as A
from sglang.lang.sgl.errors import SglSemanticError, SourcePos
from sglang.compiler.loader import FuncRef, SourceProgram
from sglang.compiler.irgen.scope import Env, freeze


_PYTHON_CONSTANTS = {"True": "true", "False": "false", "None": "none"}


class ExprLowerer:
    """Expressions of one program's `.sgl` functions → IR expressions; also owns the error/location helpers
    every part of the builder reports through."""

    def __init__(self, program: SourceProgram) -> None:
        self.program = program
        self._types: dict[int, tuple[Any, T.Ty]] = {}  # IR expression id -> (expression, type), typed once
        self._where: dict[int, tuple[Any, A.Expr]] = {}  # IR expression id -> (expression, its AST node)

    def err(self, msg: str, pos: A.Pos, env: Env | None = None, hint: str | None = None) -> SglSemanticError:
        file = env.ref.module.file if env else self.program.main.file
        return SglSemanticError(msg, SourcePos.of(self.program.texts.get(file, ""), file, pos.line, pos.col), hint)

    def loc(self, pos: A.Pos, env: Env) -> ir.Loc:
        return ir.Loc(env.ref.module.file, pos.line, pos.col)


    def lookup_func(self, name: str, env: Env) -> FuncRef | None:
        return env.ref.symbols.get(name)


    def const_value(self, e: A.Expr, env: Env, what: str) -> Any:
        if isinstance(e, A.DictLit):
            return {self.const_value(k, env, what): self.thaw(self.const_value(v, env, what)) for k, v in e.pairs}
        value = self.expr(e, env)
        if not isinstance(value, X.Const):
            params = [n.name for n in X.names_in(value) if n.fork is None and n.name in env.params]
            hint = (f"{params[0]!r} is an argument of the program, known only when it runs; pass a constant when "
                    f"calling this function from another, or write the value here") if params else None
            raise self.err(f"{what} must be a constant (known before the program runs)", e.pos, env, hint)
        return value.value

    def thaw(self, v: Any) -> Any:
        return [self.thaw(x) for x in v] if isinstance(v, tuple) else v

    def did_you_mean(self, name: str, pool: Any) -> str | None:
        close = difflib.get_close_matches(name, list(pool), 1)
        return f"did you mean {close[0]!r}?" if close else None

    def expr(self, e: A.Expr, env: Env, allow_maybe: bool = False) -> Any:
        out = self._expr(e, env, allow_maybe)
        self.check_types(out, e, env)
        return X.substitute(out, {})  # folds constant sub-trees

    # ---------------- types
    def type_of_name(self, n: X.Name, env: Env) -> T.Ty:
        if n.fork is not None:
            fork = next((f for f in env.forks.values() if f.node == n.fork), None)
            var = fork.branch_vars[min(n.branch or 0, len(fork.branch_vars) - 1)].get(n.name) if fork else None
            return (var.ty or T.STR) if var is not None else T.ANY
        if n.name in env.locals:
            return T.ANY
        if n.name in env.gen:
            return env.gen[n.name].ty or T.STR
        return T.declared(env.params.get(n.name))

    def type_of(self, out: Any, env: Env) -> T.Ty:
        """The static type of an already checked IR expression."""
        return T.infer_expr(out, lambda n: self.type_of_name(n, env), self._types)

    def check_types(self, out: Any, e: A.Expr, env: Env) -> None:
        try:
            T.infer_expr(out, lambda n: self.type_of_name(n, env), self._types)
        except T.TypeMismatch as m:
            node = self._where.get(id(m.expr), (None, e))[1]
            raise self.err(m.message, self._op_pos(node, env), env, m.hint) from None

    def _op_pos(self, e: A.Expr, env: Env) -> A.Pos:
        """Where an operator error points: the operator itself when it is on the line of its right operand."""
        if not isinstance(e, A.BinOp) or e.right.pos.line != e.pos.line:
            return e.pos
        lines = self.program.texts.get(env.ref.module.file, "").splitlines()
        if not 0 < e.pos.line <= len(lines):
            return e.pos
        col = lines[e.pos.line - 1].rfind(e.op.split()[0], e.pos.col - 1, max(e.right.pos.col - 1, 0))
        return A.Pos(e.pos.line, col + 1) if col >= 0 else e.pos

    def _expr(self, e: A.Expr, env: Env, allow_maybe: bool) -> Any:
        out = self._expr_of(e, env, allow_maybe)
        if not isinstance(e, (A.Name, A.Const)):  # names and constants never fail to type
            self._where[id(out)] = (out, e)
        return out

    def _expr_of(self, e: A.Expr, env: Env, allow_maybe: bool) -> Any:
        if isinstance(e, A.Const):
            return X.Const(e.value)
        if isinstance(e, A.Str):
            pieces: list[Any] = []
            for p in e.parts:
                pieces.append(X.Const(p) if isinstance(p, str) else X.CallExpr("str", (self._expr(p, env, allow_maybe),)))
            if not pieces:
                return X.Const("")
            out = pieces[0] if isinstance(pieces[0], X.Const) or len(pieces) > 1 else pieces[0]
            for p in pieces[1:]:
                out = X.Binary("+", out, p)
            return out
        if isinstance(e, A.Name):
            return self.name(e, env, allow_maybe)
        if isinstance(e, A.ListLit):
            return X.ListExpr(tuple(self._expr(i, env, allow_maybe) for i in e.items))
        if isinstance(e, A.DictLit):
            raise self.err("a dict is allowed only as a json_schema value or in return {...}", e.pos, env)
        if isinstance(e, A.BinOp):
            return X.Binary(e.op, self._expr(e.left, env, allow_maybe), self._expr(e.right, env, allow_maybe))
        if isinstance(e, A.UnaryOp):
            return X.Unary(e.op, self._expr(e.operand, env, allow_maybe))
        if isinstance(e, A.Index):
            if isinstance(e.obj, A.Name) and e.obj.id in env.forks:
                raise self.err(f"{e.obj.id}[...] is a fork branch; read its variables as {e.obj.id}[i].NAME", e.pos, env)
            return X.Index(self._expr(e.obj, env, allow_maybe), self._expr(e.index, env, allow_maybe))
        if isinstance(e, A.Attr):
            return self.fork_var(e, env)
        if isinstance(e, A.Call):
            return self.call_expr(e, env, allow_maybe)
        raise self.err(f"unsupported expression {type(e).__name__}", e.pos, env)  # pragma: no cover

    def name(self, e: A.Name, env: Env, allow_maybe: bool) -> Any:
        n = e.id
        if n in env.consts:
            return X.Const(freeze(env.consts[n]))
        if n in env.aliases:
            value, reads = env.aliases[n]
            for var, version in reads.items():
                if var in env.gen and env.gen[var].version != version:
                    raise self.err(f"{n!r} refers to {var!r}, which has been generated again since {n!r} was set",
                                   e.pos, env, f"use a fresh gen name, or read {var!r} directly")
            return value
        if n in env.locals:
            return X.Name(n)
        if n in env.gen:
            if not env.gen[n].definite and not allow_maybe:
                raise self.err(f"variable {n!r} may not be generated here: it is generated only on some paths "
                               f"(line {env.gen[n].pos.line})", e.pos, env,
                               "generate it on every branch (add an else), or read it only where it is generated")
            return X.Name(n)
        if n in env.params:
            return X.Name(n)
        if n in env.forks:
            raise self.err(f"{n!r} is a fork; read a branch's variable as {n}[i].NAME", e.pos, env)
        if n in env.later_gens:
            raise self.err(f"variable {n!r} is used before it is generated (gen at line {env.later_gens[n].line})",
                           e.pos, env)
        if self._before_quote(e, env):
            raise self.err(f"'{n}\"...\"' is Python syntax: .sgl strings interpolate {{expr}} without a prefix",
                           e.pos, env, "drop the prefix (use r\"...\" for a raw string)")
        if n in env.ref.symbols or any(k.startswith(n + ".") for k in env.ref.symbols):
            raise self.err(f"{n!r} is a function, not a value; call it as a statement or `let x = {n}(...)`", e.pos, env)
        if n in _PYTHON_CONSTANTS:
            raise self.err(f"undefined variable {n!r}", e.pos, env, f"write {_PYTHON_CONSTANTS[n]!r} (lower case)")
        pool = set(env.consts) | set(env.aliases) | env.locals | set(env.gen) | set(env.params)
        raise self.err(f"undefined variable {n!r}", e.pos, env, self.did_you_mean(n, pool))

    def _before_quote(self, e: A.Name, env: Env) -> bool:
        """Whether the name is directly followed by a quote in the source (a Python f"..." / b"...")."""
        lines = self.program.texts.get(env.ref.module.file, "").splitlines()
        if not 0 < e.pos.line <= len(lines):
            return False
        line = lines[e.pos.line - 1]
        after = e.pos.col - 1 + len(e.id)
        return line[e.pos.col - 1:after] == e.id and line[after:after + 1] in ("'", '"')

    def fork_var(self, e: A.Attr, env: Env) -> Any:
        if not (isinstance(e.obj, A.Index) and isinstance(e.obj.obj, A.Name) and e.obj.obj.id in env.forks):
            if isinstance(e.obj, A.Name) and e.obj.id in env.forks:
                raise self.err(f"say which branch: {e.obj.id}[0].{e.name}", e.pos, env)
            raise self.err(f"'.{e.name}' reads a fork branch's variable (fork[i].NAME); this is not a fork", e.pos, env)
        fork = env.forks[e.obj.obj.id]
        idx = self.expr(e.obj.index, env)
        if not (isinstance(idx, X.Const) and isinstance(idx.value, int)):
            raise self.err("a fork branch index must be a constant int (or a literal loop's variable)", e.obj.index.pos, env)
        b = idx.value
        if fork.n is not None:
            if not 0 <= b < fork.n:
                raise self.err(f"fork {e.obj.obj.id!r} has {fork.n} branch(es); index {b} is out of range",
                               e.obj.index.pos, env)
            var = fork.branch_vars[b].get(e.name)
        else:
            var = fork.branch_vars[0].get(e.name)
        if var is None:
            raise self.err(f"branch {b} of fork {e.obj.obj.id!r} does not generate {e.name!r}", e.pos, env,
                           self.did_you_mean(e.name, fork.branch_vars[b if fork.n else 0]))
        return X.Name(e.name, fork.node, b)

    def call_expr(self, e: A.Call, env: Env, allow_maybe: bool) -> Any:
        func, args = e.func, list(e.args)
        if func in ("image", "video"):
            raise self.err(f"{func}(...) appends media; use it as a statement", e.pos, env)
        if self.lookup_func(func, env) is not None:
            raise self.err(f"calling the .sgl function {func!r} is allowed only as a statement or `let x = {func}(...)`",
                           e.pos, env)
        if "." in func:  # x.strip() style: the receiver becomes the first argument
            recv, _, method = func.rpartition(".")
            if method in X.FUNCTIONS:
                args = [A.Arg(None, self._dotted_expr(recv, e.pos))] + args
                func = method
        if func not in X.FUNCTIONS:
            raise self.err(f"unknown function {func!r}", e.pos, env,
                           self.did_you_mean(func, list(X.FUNCTIONS) + list(env.ref.symbols)) or
                           f"builtins: {', '.join(X.FUNCTIONS)}")
        if any(a.name for a in args):
            raise self.err(f"builtin {func}() takes positional arguments only", e.pos, env)
        return X.CallExpr(func, tuple(self._expr(a.value, env, allow_maybe) for a in args))

    @staticmethod
    def _dotted_expr(dotted: str, pos: A.Pos) -> A.Expr:
        parts = dotted.split(".")
        out: A.Expr = A.Name(parts[0], pos)
        for p in parts[1:]:
            out = A.Attr(out, p, pos)
        return out
