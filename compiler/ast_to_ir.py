"""Lower the `.sgl` AST to the IR of lang/ir.py, checking the program on the way.

Semantic checks (each an `SglSemanticError` at the offending position): undefined names, variables read
before (or only sometimes) generated, duplicate names, wrong argument types or counts, unknown or
ill-typed gen/select parameters, roles nested or unbalanced, `return` not last.

Lowering choices (so that `.sgl` and traced Python give the same canonical IR):
* calls to other `.sgl` functions are inlined on the caller's stream (the callee's gens land in the
  caller's state, as in SGLang); `let r = f(...)` binds r to the callee's return expression;
* `let` names and unrolled loop variables are compile-time aliases, substituted where used;
* `for` over a literal (list, range(...) of constants) is unrolled; over a run-time value it is a Loop;
* `fork t[n]` with a constant n gets one arm per branch (index variable bound to a constant);
* appends split into Text / Arg / VarRef / Interp ops exactly as the canonical form wants.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from ..lang import ir
from ..lang import ir_expr as X
from ..lang import sgl_ast as A
from ..lang.sgl_errors import SglSemanticError, SourcePos
from .loader import FuncRef, SourceProgram

TYPES = ("str", "int", "float", "bool", "list", "dict", "image", "video", "any")
_PY_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (tuple, list),
             "dict": (dict,), "image": (str,), "video": (str,)}
# gen parameter -> (accepted python types, description)
GEN_PARAMS: dict[str, tuple[tuple[type, ...], str]] = {
    "max_tokens": ((int,), "an int"), "min_tokens": ((int,), "an int"), "stop": ((str, tuple), "a string or list of strings"),
    "stop_token_ids": ((tuple,), "a list of ints"), "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"), "top_k": ((int,), "an int"), "min_p": ((int, float), "a number"),
    "frequency_penalty": ((int, float), "a number"), "presence_penalty": ((int, float), "a number"),
    "repetition_penalty": ((int, float), "a number"), "ignore_eos": ((bool,), "true or false"),
    "regex": ((str,), "a string"), "json_schema": ((str, dict), "a JSON schema (dict or string)"),
    "dtype": ((str,), "one of int, str, float, bool"), "return_logprob": ((bool,), "true or false"),
    "logprob_start_len": ((int,), "an int"), "top_logprobs_num": ((int,), "an int"),
    "return_text_in_logprobs": ((bool,), "true or false"), "choices": ((tuple,), "a list of strings"),
    "choices_method": ((str,), "a string"),
}
SELECT_PARAMS = ("choices", "temperature", "choices_method")


@dataclass
class _Var:
    definite: bool
    version: int
    pos: A.Pos


@dataclass
class _Fork:
    node: int
    n: int | None
    branch_vars: list[dict[str, _Var]]


@dataclass
class _Env:
    ref: FuncRef  # the function whose body is being lowered (for its module's symbols)
    params: dict[str, str]  # entry-function parameters -> type name (IR arguments)
    consts: dict[str, Any] = field(default_factory=dict)
    aliases: dict[str, tuple[Any, dict[str, int]]] = field(default_factory=dict)  # let -> (expr, versions read)
    locals: set[str] = field(default_factory=set)  # run-time loop / fork index variables
    gen: dict[str, _Var] = field(default_factory=dict)
    forks: dict[str, _Fork] = field(default_factory=dict)
    role: str | None = None
    calls: tuple[str, ...] = ()
    later_gens: dict[str, A.Pos] = field(default_factory=dict)  # all gen names of the function (for hints)

    def copy(self) -> "_Env":
        return dataclasses.replace(self, consts=dict(self.consts), aliases=dict(self.aliases), locals=set(self.locals),
                                   gen={k: dataclasses.replace(v) for k, v in self.gen.items()},
                                   forks=dict(self.forks))


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else v


def _all_gens(body: list[A.Stmt], out: dict[str, A.Pos]) -> dict[str, A.Pos]:
    for s in body:
        if isinstance(s, (A.Gen, A.Select)):
            out.setdefault(s.name, s.pos)
        for sub in _sub_bodies(s):
            _all_gens(sub, out)
    return out


def _sub_bodies(s: A.Stmt) -> list[list[A.Stmt]]:
    if isinstance(s, (A.Role, A.ForkN, A.For)):
        return [s.body]
    if isinstance(s, A.ForkBranches):
        return list(s.branches)
    if isinstance(s, A.If):
        return [a.body for a in s.arms] + ([s.orelse] if s.orelse is not None else [])
    return []


class Lowerer:
    """Lowers one entry function (and, inlined, everything it calls) to an `ir.IRFunction`."""

    def __init__(self, program: SourceProgram):
        self.program = program

    # ---------------- errors
    def err(self, msg: str, pos: A.Pos, env: _Env | None = None, hint: str | None = None) -> SglSemanticError:
        file = env.ref.module.file if env else self.program.main.file
        return SglSemanticError(msg, SourcePos.of(self.program.texts.get(file, ""), file, pos.line, pos.col), hint)

    def loc(self, pos: A.Pos, env: _Env) -> ir.Loc:
        return ir.Loc(env.ref.module.file, pos.line, pos.col)

    # ---------------- entry
    def lower_function(self, name: str) -> ir.IRFunction:
        ref = self.program.symbols.get(name)
        if ref is None:
            raise SglSemanticError(f"no function {name!r} in {self.program.main.file}",
                                   hint=f"functions: {', '.join(self.program.entry_functions()) or 'none'}")
        f = ref.func
        params: dict[str, str] = {}
        defaults: dict[str, Any] = {}
        env = _Env(ref, params, later_gens=_all_gens(f.body, {}))
        for p in f.params:
            if p.name in params:
                raise self.err(f"duplicate parameter {p.name!r}", p.pos, env)
            typ = self.type_name(p.type, env)
            params[p.name] = typ
            if p.default is not None:
                value = self.const_value(p.default, env, f"default of parameter {p.name!r}")
                self.check_type(value, typ, p.default.pos, env, f"default of parameter {p.name!r}")
                defaults[p.name] = self._thaw(value)
        # The signature travels beside the IR, not in fn.attrs, so that the IR of a `.sgl` program equals
        # the traced Python one; compile_ir moves it into attrs before the passes.
        sig: dict[str, Any] = {"param_types": dict(params), "return_kind": "none"}
        if f.returns is not None:
            sig["returns"] = str(f.returns)
        fn = ir.IRFunction(f.name, tuple(params), defaults, self.loc(f.pos, env))
        fn.sgl_signature = sig  # type: ignore[attr-defined]
        cur = fn.cursor()
        self.body(f.body, env, cur, top=True, fn=fn)
        if env.role is not None:
            raise self.err(f"role {env.role!r} is not closed", f.pos, env)
        try:
            fn.check()
        except ir.IRError as e:  # a compiler bug more than a user error, but still report it with its place
            loc = e.loc or fn.loc
            raise SglSemanticError(e.reason, SourcePos.of(self.program.texts.get(loc.file or "", ""), loc.file or "",
                                                          loc.line or 0, loc.col or 0)) from None
        return fn

    def type_name(self, t: A.TypeRef | None, env: _Env) -> str:
        if t is None:
            return "any"
        if t.name not in TYPES:
            close = difflib.get_close_matches(t.name, TYPES, 1)
            raise self.err(f"unknown type {t.name!r}", t.pos, env,
                           f"did you mean {close[0]!r}?" if close else f"types: {', '.join(TYPES)}")
        return t.name

    def check_type(self, value: Any, typ: str, pos: A.Pos, env: _Env, what: str) -> None:
        if typ == "any" or value is None:
            return
        ok = isinstance(value, _PY_TYPES[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise self.err(f"{what} must be {typ}, got {type(value).__name__} {value!r}", pos, env)

    # ---------------- statements
    def body(self, stmts: list[A.Stmt], env: _Env, cur: ir.Cursor, top: bool = False,
             fn: ir.IRFunction | None = None) -> Any:
        """Lower a block; returns the lowered return expression (inlined callee) or None."""
        for i, s in enumerate(stmts):
            if isinstance(s, A.Return):
                if not top or i != len(stmts) - 1:
                    raise self.err("return must be the last statement of the function body", s.pos, env)
                return self.ret(s, env, cur, fn)
            self.stmt(s, env, cur)
        return None

    def stmt(self, s: A.Stmt, env: _Env, cur: ir.Cursor) -> None:
        loc = self.loc(s.pos, env)
        if isinstance(s, A.ExprStmt):
            self.append(s.expr, env, cur)
        elif isinstance(s, A.Gen):
            self.gen(s, env, cur)
        elif isinstance(s, A.Select):
            self.select(s, s.args, env, cur)
        elif isinstance(s, A.Role):
            if env.role is not None:
                raise self.err(f"role {s.role!r} inside role {env.role!r}: roles do not nest", s.pos, env)
            cur.append(ir.RoleBegin(s.role), loc)
            env.role = s.role
            self.body(s.body, env, cur)
            env.role = None
            cur.append(ir.RoleEnd(s.role), loc)
        elif isinstance(s, A.Assign):
            self.check_new_name(s.name, s.pos, env, allow_let=True)
            if isinstance(s.value, A.Call) and self.lookup_func(s.value.func, env) is not None:
                value = self.inline_call(s.value, env, cur)
            else:
                value = self.expr(s.value, env)
            reads = {n.name: env.gen[n.name].version for n in X.names_in(value) if n.fork is None and n.name in env.gen}
            env.aliases[s.name] = (value, reads)
        elif isinstance(s, (A.ForkN, A.ForkBranches)):
            self.fork(s, env, cur)
        elif isinstance(s, A.Join):
            f = env.forks.get(s.name)
            if f is None:
                raise self.err(f"join of unknown fork {s.name!r}", s.pos, env, self.did_you_mean(s.name, env.forks))
            cur.append(ir.Join(f.node, "concate_and_append" if s.mode == "concat" else "gather_variable"), loc)
        elif isinstance(s, A.If):
            self.if_(s, env, cur)
        elif isinstance(s, A.For):
            self.for_(s, env, cur)
        else:  # pragma: no cover - the parser makes no other statements
            raise self.err(f"unsupported statement {type(s).__name__}", s.pos, env)

    def check_new_name(self, name: str, pos: A.Pos, env: _Env, allow_let: bool = False) -> None:
        clash = None
        if name in env.params and name not in env.aliases:
            clash = "a parameter"
        elif name in env.forks:
            clash = "a fork"
        elif name in env.locals or name in env.consts:
            clash = "a loop or fork index variable"
        elif name in env.gen and allow_let:
            clash = "a generated variable"
        elif name in env.aliases and not allow_let:
            clash = "a let variable"
        if clash:
            raise self.err(f"duplicate name {name!r}: it is already {clash}", pos, env)

    def ret(self, s: A.Return, env: _Env, cur: ir.Cursor, fn: ir.IRFunction | None) -> Any:
        keys = None
        if len(s.values) == 1 and isinstance(s.values[0], A.DictLit):
            keys, vals = [], []
            for k, v in s.values[0].pairs:
                key = self.const_value(k, env, "a returned dict key")
                if not isinstance(key, str):
                    raise self.err("returned dict keys must be strings", k.pos, env)
                keys.append(key)
                vals.append(self.expr(v, env, allow_maybe=True))
            value: Any = X.ListExpr(tuple(vals))
        elif len(s.values) == 1:
            value = self.expr(s.values[0], env, allow_maybe=True)
        elif s.values:
            value = X.ListExpr(tuple(self.expr(v, env, allow_maybe=True) for v in s.values))
        else:
            value = None
        if fn is not None:  # the entry function: a real Return op
            sig = fn.sgl_signature  # type: ignore[attr-defined]
            sig["return_kind"] = "dict" if keys is not None else ("tuple" if len(s.values) > 1 else
                                                                   "single" if s.values else "none")
            if keys is not None:
                sig["return_keys"] = keys
            cur.append(ir.Return(value), self.loc(s.pos, env))
        elif keys is not None:
            raise self.err("a function called from another may not return a dict; return a value or a tuple",
                           s.pos, env)
        return value

    # ---------------- appends
    def append(self, e: A.Expr, env: _Env, cur: ir.Cursor) -> None:
        loc = self.loc(e.pos, env)
        if isinstance(e, A.Str):
            for part in e.parts:
                if isinstance(part, str):
                    cur.append(ir.Text(part), loc)
                else:
                    self.interp(self.expr(part, env), cur, loc)
        elif isinstance(e, A.BinOp) and e.op == "+" and self._has_str(e):
            self.append(e.left, env, cur)
            self.append(e.right, env, cur)
        elif isinstance(e, A.Call) and e.func in ("image", "video"):
            self.media(e, env, cur)
        elif isinstance(e, A.Call) and self.lookup_func(e.func, env) is not None:
            self.inline_call(e, env, cur)
        else:
            value = self.expr(e, env)
            if isinstance(value, X.ListExpr) or isinstance(value, X.Const) and isinstance(value.value, tuple):
                raise self.err("cannot append a list; append its items in a for loop", e.pos, env)
            self.interp(value, cur, loc)

    @staticmethod
    def _has_str(e: A.Expr) -> bool:
        if isinstance(e, A.Str):
            return True
        return isinstance(e, A.BinOp) and e.op == "+" and (Lowerer._has_str(e.left) or Lowerer._has_str(e.right))

    @staticmethod
    def _concat_parts(e: Any) -> list[Any] | None:
        """The operands of a string concatenation (a `+` chain with a string constant in it), else None."""
        if not (isinstance(e, X.Binary) and e.op == "+"):
            return None
        parts: list[Any] = []
        for side in (e.left, e.right):
            sub = Lowerer._concat_parts(side)
            parts.extend(sub if sub is not None else [side])
        return parts if any(isinstance(p, X.Const) and isinstance(p.value, str) for p in parts) else None

    def interp(self, e: Any, cur: ir.Cursor, loc: ir.Loc) -> None:
        fn = cur.fn
        parts = self._concat_parts(e)
        if parts is not None:  # "a" + x appends "a" then x: the same text, in canonical ops
            for p in parts:
                self.interp(p, cur, loc)
            return
        if isinstance(e, X.CallExpr) and e.func == "str" and len(e.args) == 1:
            e = e.args[0]  # appending str(x) appends the text of x
        if isinstance(e, X.Const):
            cur.append(ir.Text("" if e.value is None else str(e.value)), loc)
        elif isinstance(e, X.Name) and e.fork is not None:
            cur.append(ir.VarRef(e.name, e.fork, e.branch), loc)
        elif isinstance(e, X.Name) and e.name in fn.params:
            cur.append(ir.Arg(e.name), loc)
        elif isinstance(e, X.Name) and self._is_generated(e.name, cur):
            cur.append(ir.VarRef(e.name), loc)
        else:
            cur.append(ir.Interp(e), loc)

    def _is_generated(self, name: str, cur: ir.Cursor) -> bool:
        return any(ir.defines(cur.fn.op(n)) == name for n in cur.fn.graph.nodes)

    def media(self, e: A.Call, env: _Env, cur: ir.Cursor) -> None:
        args = self.bind_builtin(e, env, ["src"] + (["num_frames"] if e.func == "video" else []), required=1)
        loc = self.loc(e.pos, env)
        if e.func == "image":
            cur.append(ir.Image(args["src"]), loc)
        else:
            nf = args.get("num_frames", X.Const(8))
            if not (isinstance(nf, X.Const) and isinstance(nf.value, int) and nf.value >= 1):
                raise self.err("video num_frames must be a constant int >= 1", e.pos, env)
            cur.append(ir.Video(args["src"], nf.value), loc)

    def bind_builtin(self, e: A.Call, env: _Env, names: list[str], required: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, a in enumerate(e.args):
            key = a.name or (names[i] if i < len(names) else None)
            if key is None or key not in names:
                raise self.err(f"{e.func}() got an unexpected argument {a.name or i + 1!r}", a.pos, env,
                               f"{e.func} takes: {', '.join(names)}")
            out[key] = self.expr(a.value, env)
        if len(out) < required:
            raise self.err(f"{e.func}() needs {', '.join(names[:required])}", e.pos, env)
        return out

    # ---------------- gen / select
    def gen_args(self, s: A.Gen | A.Select, args: list[A.Arg], env: _Env, allowed: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in args:
            if a.name is None:
                raise self.err(f"{'gen' if isinstance(s, A.Gen) else 'select'} takes keyword arguments, like max_tokens=64",
                               a.pos, env)
            if a.name not in allowed:
                close = difflib.get_close_matches(a.name, allowed, 1)
                raise self.err(f"unknown {'gen' if isinstance(s, A.Gen) else 'select'} parameter {a.name!r}", a.pos, env,
                               f"did you mean {close[0]!r}?" if close else f"parameters: {', '.join(allowed)}")
            if a.name in out:
                raise self.err(f"duplicate parameter {a.name!r}", a.pos, env)
            if a.name == "dtype" and isinstance(a.value, A.Name) and a.value.id in ("int", "str", "float", "bool"):
                out[a.name] = a.value.id
                continue
            if a.name == "choices":
                value = self.expr(a.value, env)
                out[a.name] = value.value if isinstance(value, X.Const) else value
                if isinstance(out[a.name], tuple) and not all(isinstance(c, str) for c in out[a.name]):
                    raise self.err("choices must be strings", a.pos, env)
                continue
            value = self.const_value(a.value, env, f"gen parameter {a.name!r}")
            types, desc = GEN_PARAMS[a.name]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                raise self.err(f"gen parameter {a.name!r} must be {desc}, got {value!r}", a.pos, env)
            if a.name == "stop" and isinstance(value, tuple) and not all(isinstance(x, str) for x in value):
                raise self.err("gen parameter 'stop' must be a string or list of strings", a.pos, env)
            if a.name == "stop_token_ids" and not all(isinstance(x, int) for x in value):
                raise self.err("gen parameter 'stop_token_ids' must be a list of ints", a.pos, env)
            out[a.name] = value
        return out

    def gen(self, s: A.Gen, env: _Env, cur: ir.Cursor) -> None:
        kw = self.gen_args(s, s.args, env, tuple(k for k in GEN_PARAMS if k != "choices_method"))
        if "choices" in kw:  # gen(choices=...) is a select, as in SGLang
            self.select(s, s.args, env, cur)
            return
        self.check_gen_name(s, env)
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        if isinstance(kw.get("json_schema"), dict):
            kw["json_schema"] = json.dumps(kw["json_schema"], sort_keys=True)
        try:
            op = ir.Gen(s.name, **kw)
        except TypeError as e:  # pragma: no cover - kw is filtered above
            raise self.err(str(e), s.pos, env) from None
        self.precheck_gen(op, s, env)
        cur.append(op, self.loc(s.pos, env))
        self.define(s.name, s.pos, env)

    def precheck_gen(self, op: ir.Gen, s: A.Gen, env: _Env) -> None:
        probs = [
            (op.max_tokens is not None and op.max_tokens < 0, "max_tokens must be >= 0"),
            (op.temperature is not None and op.temperature < 0, "temperature must be >= 0"),
            (op.top_p is not None and not 0 < op.top_p <= 1, "top_p must be in (0, 1]"),
            (op.dtype is not None and op.dtype not in ("int", "str", "float", "bool"), "dtype must be int, str, float or bool"),
            (sum(x is not None for x in (op.regex, op.json_schema, op.dtype)) > 1, "use at most one of regex, json_schema, dtype"),
        ]
        for bad, msg in probs:
            if bad:
                raise self.err(f"gen {s.name!r}: {msg}", s.pos, env)
        if op.json_schema is not None:
            try:
                json.loads(op.json_schema)
            except ValueError as e:
                raise self.err(f"gen {s.name!r}: json_schema is not valid JSON: {e}", s.pos, env) from None
        if op.regex is not None:
            import re

            try:
                re.compile(op.regex)
            except re.error as e:
                raise self.err(f"gen {s.name!r}: bad regex: {e}", s.pos, env) from None

    def select(self, s: A.Gen | A.Select, args: list[A.Arg], env: _Env, cur: ir.Cursor) -> None:
        args = list(args)
        if args and args[0].name is None:  # select x(["a", "b"]) == select x(choices=["a", "b"])
            args[0] = A.Arg("choices", args[0].value, args[0].pos)
        kw = self.gen_args(s, args, env, SELECT_PARAMS)
        if "choices" not in kw:
            raise self.err(f"select {s.name!r} needs choices=[...]", s.pos, env)
        choices = kw["choices"]
        if isinstance(choices, tuple) and not choices:
            raise self.err(f"select {s.name!r} needs at least one choice", s.pos, env)
        if isinstance(choices, (str, int, float, bool)):
            raise self.err("choices must be a list of strings", s.pos, env)
        method = kw.get("choices_method", "token_length_normalized")
        if method not in ir.CHOICES_METHODS:
            raise self.err(f"unknown choices_method {method!r}", s.pos, env, f"one of: {', '.join(ir.CHOICES_METHODS)}")
        temp = kw.get("temperature", 0.0)
        if not isinstance(temp, (int, float)) or isinstance(temp, bool):
            raise self.err("select temperature must be a number", s.pos, env)
        self.check_gen_name(s, env)
        cur.append(ir.Select(s.name, choices, method, float(temp)), self.loc(s.pos, env))
        self.define(s.name, s.pos, env)

    def check_gen_name(self, s: A.Gen | A.Select, env: _Env) -> None:
        if s.name in env.params and s.name not in env.aliases:
            raise self.err(f"duplicate name {s.name!r}: cannot generate into a parameter", s.pos, env)
        if s.name in env.aliases or s.name in env.consts or s.name in env.locals or s.name in env.forks:
            raise self.err(f"duplicate name {s.name!r}: it is already a let, loop or fork name", s.pos, env)

    def define(self, name: str, pos: A.Pos, env: _Env) -> None:
        prev = env.gen.get(name)
        env.gen[name] = _Var(True, (prev.version + 1) if prev else 0, pos)

    # ---------------- control flow
    def fork(self, s: A.ForkN | A.ForkBranches, env: _Env, cur: ir.Cursor) -> None:
        self.check_new_name(s.name, s.pos, env)
        if s.name in env.gen:
            raise self.err(f"duplicate name {s.name!r}: it is already a generated variable", s.pos, env)
        loc = self.loc(s.pos, env)
        if isinstance(s, A.ForkBranches):
            node = cur.append(ir.Fork(len(s.branches)), loc)
            bodies = [(b, None) for b in s.branches]
        else:
            count = self.expr(s.count, env)
            if isinstance(count, X.Const):
                n = count.value
                if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise self.err(f"fork count must be an int >= 1, got {n!r}", s.count.pos, env)
                node = cur.append(ir.Fork(n), loc)
                bodies = [(s.body, b) for b in range(n)]
            else:
                node = cur.append(ir.Fork(count, shared_body=True, index_var=s.index_var), loc)
                inner = env.copy()
                if s.index_var:
                    self.check_new_name(s.index_var, s.pos, env)
                    inner.locals.add(s.index_var)
                self.branch_body(s.body, inner, cur.arm_cursor(node, 0), s)
                env.forks[s.name] = _Fork(node, None, [inner.gen])
                return
        branch_vars = []
        for arm, (body, index) in enumerate(bodies):
            inner = env.copy()
            if isinstance(s, A.ForkN) and s.index_var:
                if arm == 0:
                    self.check_new_name(s.index_var, s.pos, env)
                inner.consts[s.index_var] = index
            self.branch_body(body, inner, cur.arm_cursor(node, arm), s)
            branch_vars.append(inner.gen)
        env.forks[s.name] = _Fork(node, len(bodies), branch_vars)

    def branch_body(self, body: list[A.Stmt], inner: _Env, cur: ir.Cursor, s: A.Stmt) -> None:
        role = inner.role
        self.body(body, inner, cur)
        if inner.role != role:
            raise self.err("a role block must open and close inside the same branch", s.pos, inner)

    def if_(self, s: A.If, env: _Env, cur: ir.Cursor) -> None:
        conds = [self.expr(a.cond, env) for a in s.arms]
        has_else = s.orelse is not None
        node = cur.append(ir.Branch(tuple(conds) + ((None,) if has_else else ())), self.loc(s.pos, env))
        bodies = [a.body for a in s.arms] + ([s.orelse] if has_else else [])
        outs: list[_Env] = []
        exhaustive = has_else
        for arm, body in enumerate(bodies):
            inner = env.copy()
            self.body(body, inner, cur.arm_cursor(node, arm))
            c = conds[arm] if arm < len(conds) else None
            if isinstance(c, X.Const) and not c.value:
                continue  # never taken: its definitions do not count
            outs.append(inner)
            if isinstance(c, X.Const) and c.value:
                exhaustive = True
                break
        self.merge(env, outs, exhaustive)

    def merge(self, env: _Env, outs: list[_Env], exhaustive: bool) -> None:
        names = set().union(*(o.gen for o in outs)) if outs else set()
        for name in names:
            defs = [o.gen.get(name) for o in outs]
            everywhere = exhaustive and all(d is not None and d.definite for d in defs)
            version = max(d.version for d in defs if d is not None) + 1
            prev = env.gen.get(name)
            definite = everywhere or (prev is not None and prev.definite)
            pos = next(d.pos for d in defs if d is not None)
            env.gen[name] = _Var(definite, version if prev is None or any(d is not prev for d in defs) else prev.version,
                                 pos)
        for o in outs:
            for k, v in o.forks.items():
                env.forks.setdefault(k, v)

    def for_(self, s: A.For, env: _Env, cur: ir.Cursor) -> None:
        self.check_new_name(s.var, s.pos, env)
        it = self.expr(s.iter, env)
        if isinstance(it, X.Const):
            values = it.value
            if isinstance(values, str) or not isinstance(values, tuple):
                raise self.err(f"for needs a list or range(...) to loop over, got {values!r}", s.iter.pos, env)
            saved_aliases = dict(env.aliases)
            for v in values:  # unrolled: the loop variable is a compile-time constant
                env.consts[s.var] = v
                self.body(s.body, env, cur)
            env.consts.pop(s.var, None)
            env.aliases = saved_aliases
            return
        if isinstance(it, X.ListExpr):  # a literal list of run-time values: unrolled, the variable aliases each item
            saved_aliases = dict(env.aliases)
            for item in it.items:
                reads = {n.name: env.gen[n.name].version for n in X.names_in(item) if n.fork is None and n.name in env.gen}
                env.aliases[s.var] = (item, reads)
                self.body(s.body, env, cur)
            env.aliases = saved_aliases
            return
        node = cur.append(ir.Loop(s.var, it), self.loc(s.pos, env))
        inner = env.copy()
        inner.locals.add(s.var)
        self.body(s.body, inner, cur.arm_cursor(node, 0))
        if inner.role != env.role:
            raise self.err("a role block must open and close inside the loop body", s.pos, env)
        self.merge(env, [inner], exhaustive=False)

    # ---------------- calls
    def lookup_func(self, name: str, env: _Env) -> FuncRef | None:
        return env.ref.symbols.get(name)

    def inline_call(self, call: A.Call, env: _Env, cur: ir.Cursor) -> Any:
        ref = self.lookup_func(call.func, env)
        assert ref is not None
        f = ref.func
        if f.name in env.calls or f.name == env.ref.func.name and not env.calls:
            raise self.err(f"recursive call of {f.name!r} is not supported", call.pos, env)
        bound: dict[str, Any] = {}
        positional = [a for a in call.args if a.name is None]
        if len(positional) > len(f.params):
            raise self.err(f"{call.func}() takes {len(f.params)} argument(s), got {len(positional)}", call.pos, env)
        seen_kw = False
        for i, a in enumerate(call.args):
            if a.name is None:
                if seen_kw:
                    raise self.err("positional argument after a keyword argument", a.pos, env)
                p = f.params[i]
            else:
                seen_kw = True
                p = next((p for p in f.params if p.name == a.name), None)
                if p is None:
                    raise self.err(f"{call.func}() has no parameter {a.name!r}", a.pos, env,
                                   f"parameters: {', '.join(x.name for x in f.params) or 'none'}")
            if p.name in bound:
                raise self.err(f"{call.func}() got parameter {p.name!r} twice", a.pos, env)
            value = self.expr(a.value, env)
            typ = self.type_name(p.type, dataclasses.replace(env, ref=ref))
            if isinstance(value, X.Const):
                self.check_type(value.value, typ, a.pos, env, f"argument {p.name!r} of {call.func}()")
            elif isinstance(value, X.Name) and value.fork is None and value.name in env.params and value.name not in env.aliases:
                have = env.params[value.name]
                if "any" not in (have, typ) and have != typ and not (have == "int" and typ == "float"):
                    raise self.err(f"argument {p.name!r} of {call.func}() must be {typ}, but {value.name!r} is {have}",
                                   a.pos, env)
            bound[p.name] = value
        callee = _Env(ref, env.params, calls=env.calls + (env.ref.func.name, f.name), gen=env.gen, role=env.role,
                      later_gens=_all_gens(f.body, {}))
        for p in f.params:
            if p.name not in bound:
                if p.default is None:
                    raise self.err(f"{call.func}() is missing argument {p.name!r}", call.pos, env)
                bound[p.name] = self.expr(p.default, callee)
            callee.aliases[p.name] = (bound[p.name], {n.name: env.gen[n.name].version for n in X.names_in(bound[p.name])
                                                     if n.fork is None and n.name in env.gen})
        result = None
        for i, s in enumerate(f.body):
            if isinstance(s, A.Return):
                if i != len(f.body) - 1:
                    raise self.err("return must be the last statement of the function body", s.pos, callee)
                result = self.ret(s, callee, cur, None)
            else:
                self.stmt(s, callee, cur)
        if callee.role != env.role:
            raise self.err(f"{call.func}() leaves a role block open", call.pos, env)
        env.gen = callee.gen  # shared stream: the callee's variables are the caller's
        return result if result is not None else X.Const(None)

    # ---------------- expressions
    def const_value(self, e: A.Expr, env: _Env, what: str) -> Any:
        if isinstance(e, A.DictLit):
            return {self.const_value(k, env, what): self._thaw(self.const_value(v, env, what)) for k, v in e.pairs}
        value = self.expr(e, env)
        if not isinstance(value, X.Const):
            raise self.err(f"{what} must be a constant (known before the program runs)", e.pos, env)
        return value.value

    def _thaw(self, v: Any) -> Any:
        return [self._thaw(x) for x in v] if isinstance(v, tuple) else v

    def did_you_mean(self, name: str, pool: Any) -> str | None:
        close = difflib.get_close_matches(name, list(pool), 1)
        return f"did you mean {close[0]!r}?" if close else None

    def expr(self, e: A.Expr, env: _Env, allow_maybe: bool = False) -> Any:
        out = self._expr(e, env, allow_maybe)
        return X.substitute(out, {})  # folds constant sub-trees

    def _expr(self, e: A.Expr, env: _Env, allow_maybe: bool) -> Any:
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

    def name(self, e: A.Name, env: _Env, allow_maybe: bool) -> Any:
        n = e.id
        if n in env.consts:
            return X.Const(_freeze(env.consts[n]))
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
        if n in env.ref.symbols or any(k.startswith(n + ".") for k in env.ref.symbols):
            raise self.err(f"{n!r} is a function, not a value; call it as a statement or `let x = {n}(...)`", e.pos, env)
        pool = set(env.consts) | set(env.aliases) | env.locals | set(env.gen) | set(env.params)
        raise self.err(f"undefined variable {n!r}", e.pos, env, self.did_you_mean(n, pool))

    def fork_var(self, e: A.Attr, env: _Env) -> Any:
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

    def call_expr(self, e: A.Call, env: _Env, allow_maybe: bool) -> Any:
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


def lower_program(program: SourceProgram, functions: list[str] | None = None) -> dict[str, ir.IRFunction]:
    """IR for each function of the main module (or the named ones), in source order."""
    names = functions if functions is not None else program.entry_functions()
    low = Lowerer(program)
    return {n: low.lower_function(n) for n in names}
