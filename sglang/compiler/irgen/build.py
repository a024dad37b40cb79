"""Lower the `.sgl` AST to the IR of lang/ir/graph.py, checking the program on the way.

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
from typing import Any

from sglang.lang import ir
from sglang.lang.ir import expr as X
from sglang.lang.ir import types as T
from sglang.lang.sgl import nodes as A
from sglang.lang.sgl.errors import SglSemanticError, SourcePos
from sglang.compiler.loader import SourceProgram
from sglang.compiler.irgen.scope import PY_TYPES, TYPES, Env, Fork, Var, all_gens
from sglang.compiler.irgen.exprs import ExprLowerer
from sglang.compiler.irgen.gen_args import GenLowerer

# Unrolling copies the body once per arm / iteration: past this the program would take minutes and
# gigabytes to compile (fork f[100000000] reached 7.5 GB), so it is refused with the position.
MAX_UNROLL = 4096


class Lowerer:
    """Lowers one entry function (and, inlined, everything it calls) to an `ir.IRFunction`."""

    def __init__(self, program: SourceProgram) -> None:
        self.program = program
        self.exprs = ExprLowerer(program)  # expressions, constants, errors and locations
        self.gens = GenLowerer(self.exprs)  # gen / select statements

    # ---------------- entry
    def lower_function(self, name: str) -> ir.IRFunction:
        ref = self.program.symbols.get(name)
        if ref is None:
            raise SglSemanticError(f"no function {name!r} in {self.program.main.file}",
                                   hint=f"functions: {', '.join(self.program.entry_functions()) or 'none'}")
        f = ref.func
        params: dict[str, str] = {}
        defaults: dict[str, Any] = {}
        env = Env(ref, params, later_gens=all_gens(f.body, {}))
        for p in f.params:
            if p.name in params:
                raise self.exprs.err(f"duplicate parameter {p.name!r}", p.pos, env)
            typ = self.type_name(p.type, env)
            params[p.name] = typ
            if p.default is not None:
                value = self.exprs.const_value(p.default, env, f"default of parameter {p.name!r}")
                self.check_type(value, typ, p.default.pos, env, f"default of parameter {p.name!r}")
                defaults[p.name] = self.exprs.thaw(value)
        # The signature travels beside the IR, not in fn.attrs, so that the IR of a `.sgl` program equals
        # the traced Python one; compile_ir moves it into attrs before the passes.
        sig: dict[str, Any] = {"param_types": dict(params), "return_kind": "none"}
        if f.returns is not None:
            sig["returns"] = str(f.returns)
        fn = ir.IRFunction(f.name, tuple(params), defaults, self.exprs.loc(f.pos, env))
        fn.sgl_signature = sig  # type: ignore[attr-defined]
        cur = fn.cursor()
        self.body(f.body, env, cur, top=True, fn=fn)
        if env.role is not None:
            raise self.exprs.err(f"role {env.role!r} is not closed", f.pos, env)
        try:
            fn.check()
        except ir.IRError as e:  # a compiler bug more than a user error, but still report it with its place
            loc = e.loc or fn.loc
            raise SglSemanticError(e.reason, SourcePos.of(self.program.texts.get(loc.file or "", ""), loc.file or "",
                                                          loc.line or 0, loc.col or 0)) from None
        return fn

    def type_name(self, t: A.TypeRef | None, env: Env) -> str:
        if t is None:
            return "any"
        if t.name not in TYPES:
            close = difflib.get_close_matches(t.name, TYPES, 1)
            raise self.exprs.err(f"unknown type {t.name!r}", t.pos, env,
                           f"did you mean {close[0]!r}?" if close else f"types: {', '.join(TYPES)}")
        return t.name

    def check_type(self, value: Any, typ: str, pos: A.Pos, env: Env, what: str) -> None:
        if typ == "any" or value is None:
            return
        ok = isinstance(value, PY_TYPES[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise self.exprs.err(f"{what} must be {typ}, got {type(value).__name__} {value!r}", pos, env)

    # ---------------- statements
    def body(self, stmts: list[A.Stmt], env: Env, cur: ir.Cursor, top: bool = False,
             fn: ir.IRFunction | None = None) -> Any:
        """Lower a block; returns the lowered return expression (inlined callee) or None."""
        for i, s in enumerate(stmts):
            if isinstance(s, A.Return):
                if not top or i != len(stmts) - 1:
                    raise self.exprs.err("return must be the last statement of the function body", s.pos, env)
                return self.ret(s, env, cur, fn)
            self.stmt(s, env, cur)
        return None

    def stmt(self, s: A.Stmt, env: Env, cur: ir.Cursor) -> None:
        loc = self.exprs.loc(s.pos, env)
        if isinstance(s, A.ExprStmt):
            self.append(s.expr, env, cur)
        elif isinstance(s, A.Gen):
            self.gens.gen(s, env, cur)
        elif isinstance(s, A.Select):
            self.gens.select(s, s.args, env, cur)
        elif isinstance(s, A.Role):
            if env.role is not None:
                raise self.exprs.err(f"role {s.role!r} inside role {env.role!r}: roles do not nest", s.pos, env)
            cur.append(ir.RoleBegin(s.role), loc)
            env.role = s.role
            self.body(s.body, env, cur)
            env.role = None
            cur.append(ir.RoleEnd(s.role), loc)
        elif isinstance(s, A.Assign):
            self.check_new_name(s.name, s.pos, env, allow_let=True)
            if isinstance(s.value, A.Call) and self.exprs.lookup_func(s.value.func, env) is not None:
                value = self.inline_call(s.value, env, cur)
            else:
                value = self.exprs.expr(s.value, env)
            reads = {n.name: env.gen[n.name].version for n in X.names_in(value) if n.fork is None and n.name in env.gen}
            env.aliases[s.name] = (value, reads)
        elif isinstance(s, (A.ForkN, A.ForkBranches)):
            self.fork(s, env, cur)
        elif isinstance(s, A.Join):
            f = env.forks.get(s.name)
            if f is None:
                raise self.exprs.err(f"join of unknown fork {s.name!r}", s.pos, env, self.exprs.did_you_mean(s.name, env.forks))
            cur.append(ir.Join(f.node, "concate_and_append" if s.mode == "concat" else "gather_variable"), loc)
        elif isinstance(s, A.If):
            self.if_(s, env, cur)
        elif isinstance(s, A.For):
            self.for_(s, env, cur)
        elif isinstance(s, A.While):
            self.while_(s, env, cur)
        else:  # pragma: no cover - the parser makes no other statements
            raise self.exprs.err(f"unsupported statement {type(s).__name__}", s.pos, env)

    def check_new_name(self, name: str, pos: A.Pos, env: Env, allow_let: bool = False) -> None:
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
            raise self.exprs.err(f"duplicate name {name!r}: it is already {clash}", pos, env)

    def ret(self, s: A.Return, env: Env, cur: ir.Cursor, fn: ir.IRFunction | None) -> Any:
        keys = None
        if len(s.values) == 1 and isinstance(s.values[0], A.DictLit):
            keys, vals = [], []
            for k, v in s.values[0].pairs:
                key = self.exprs.const_value(k, env, "a returned dict key")
                if not isinstance(key, str):
                    raise self.exprs.err("returned dict keys must be strings", k.pos, env)
                keys.append(key)
                vals.append(self.exprs.expr(v, env, allow_maybe=True))
            value: Any = X.ListExpr(tuple(vals))
        elif len(s.values) == 1:
            value = self.exprs.expr(s.values[0], env, allow_maybe=True)
        elif s.values:
            value = X.ListExpr(tuple(self.exprs.expr(v, env, allow_maybe=True) for v in s.values))
        else:
            value = None
        if fn is not None:  # the entry function: a real Return op
            sig = fn.sgl_signature  # type: ignore[attr-defined]
            sig["return_kind"] = "dict" if keys is not None else ("tuple" if len(s.values) > 1 else
                                                                   "single" if s.values else "none")
            if keys is not None:
                sig["return_keys"] = keys
            cur.append(ir.Return(value), self.exprs.loc(s.pos, env))
        elif keys is not None:
            raise self.exprs.err("a function called from another may not return a dict; return a value or a tuple",
                           s.pos, env)
        return value

    # ---------------- appends
    def append(self, e: A.Expr, env: Env, cur: ir.Cursor) -> None:
        loc = self.exprs.loc(e.pos, env)
        if isinstance(e, A.Str):
            for part in e.parts:
                if isinstance(part, str):
                    cur.append(ir.Text(part), loc)
                else:
                    self.interp(self.exprs.expr(part, env), cur, loc)
        elif isinstance(e, A.BinOp) and e.op == "+" and self._has_str(e):
            self.append(e.left, env, cur)
            self.append(e.right, env, cur)
        elif isinstance(e, A.Call) and e.func in ("image", "video"):
            self.media(e, env, cur)
        elif isinstance(e, A.Call) and self.exprs.lookup_func(e.func, env) is not None:
            self.inline_call(e, env, cur)
        else:
            value = self.exprs.expr(e, env)
            if isinstance(value, X.ListExpr) or isinstance(value, X.Const) and isinstance(value.value, tuple):
                raise self.exprs.err("cannot append a list; append its items in a for loop", e.pos, env)
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

    def media(self, e: A.Call, env: Env, cur: ir.Cursor) -> None:
        args = self.bind_builtin(e, env, ["src"] + (["num_frames"] if e.func == "video" else []), required=1)
        loc = self.exprs.loc(e.pos, env)
        if e.func == "image":
            cur.append(ir.Image(args["src"]), loc)
        else:
            nf = args.get("num_frames", X.Const(8))
            if not (isinstance(nf, X.Const) and isinstance(nf.value, int) and nf.value >= 1):
                raise self.exprs.err("video num_frames must be a constant int >= 1", e.pos, env)
            cur.append(ir.Video(args["src"], nf.value), loc)

    def bind_builtin(self, e: A.Call, env: Env, names: list[str], required: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, a in enumerate(e.args):
            key = a.name or (names[i] if i < len(names) else None)
            if key is None or key not in names:
                raise self.exprs.err(f"{e.func}() got an unexpected argument {a.name or i + 1!r}", a.pos, env,
                               f"{e.func} takes: {', '.join(names)}")
            out[key] = self.exprs.expr(a.value, env)
        if len(out) < required:
            raise self.exprs.err(f"{e.func}() needs {', '.join(names[:required])}", e.pos, env)
        return out


    # ---------------- control flow
    def fork(self, s: A.ForkN | A.ForkBranches, env: Env, cur: ir.Cursor) -> None:
        self.check_new_name(s.name, s.pos, env)
        if s.name in env.gen:
            raise self.exprs.err(f"duplicate name {s.name!r}: it is already a generated variable", s.pos, env)
        loc = self.exprs.loc(s.pos, env)
        if isinstance(s, A.ForkBranches):
            node = cur.append(ir.Fork(len(s.branches)), loc)
            bodies = [(b, None) for b in s.branches]
        else:
            count = self.exprs.expr(s.count, env)
            if isinstance(count, X.Const):
                n = count.value
                if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                    raise self.exprs.err(f"fork count must be an int >= 1, got {n!r}", s.count.pos, env)
                if n > MAX_UNROLL:
                    raise self.exprs.err(f"fork count {n} is more than {MAX_UNROLL}, the most sglc unrolls",
                                         s.count.pos, env)
                node = cur.append(ir.Fork(n), loc)
                bodies = [(s.body, b) for b in range(n)]
            else:
                node = cur.append(ir.Fork(count, shared_body=True, index_var=s.index_var), loc)
                inner = env.copy()
                if s.index_var:
                    self.check_new_name(s.index_var, s.pos, env)
                    inner.locals.add(s.index_var)
                self.branch_body(s.body, inner, cur.arm_cursor(node, 0), s)
                env.forks[s.name] = Fork(node, None, [inner.gen])
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
        env.forks[s.name] = Fork(node, len(bodies), branch_vars)

    def branch_body(self, body: list[A.Stmt], inner: Env, cur: ir.Cursor, s: A.Stmt) -> None:
        role = inner.role
        self.body(body, inner, cur)
        if inner.role != role:
            raise self.exprs.err("a role block must open and close inside the same branch", s.pos, inner)

    def if_(self, s: A.If, env: Env, cur: ir.Cursor) -> None:
        conds = [self.exprs.expr(a.cond, env) for a in s.arms]
        has_else = s.orelse is not None
        node = cur.append(ir.Branch(tuple(conds) + ((None,) if has_else else ())), self.exprs.loc(s.pos, env))
        bodies = [a.body for a in s.arms] + ([s.orelse] if has_else else [])
        outs: list[Env] = []
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

    def merge(self, env: Env, outs: list[Env], exhaustive: bool) -> None:
        names = set().union(*(o.gen for o in outs)) if outs else set()
        for name in names:
            defs = [o.gen.get(name) for o in outs]
            everywhere = exhaustive and all(d is not None and d.definite for d in defs)
            version = max(d.version for d in defs if d is not None) + 1
            prev = env.gen.get(name)
            definite = everywhere or (prev is not None and prev.definite)
            pos = next(d.pos for d in defs if d is not None)
            ty = None
            for d in [prev] * (not everywhere) + defs:  # its type on every path that may reach here
                if d is not None:
                    ty = (d.ty or T.STR) if ty is None else T.join(ty, d.ty or T.STR)
            env.gen[name] = Var(definite, version if prev is None or any(d is not prev for d in defs) else prev.version,
                                 pos, ty)
        for o in outs:
            for k, v in o.forks.items():
                env.forks.setdefault(k, v)

    def while_(self, s: A.While, env: Env, cur: ir.Cursor) -> None:
        cond = self.exprs.expr(s.cond, env)
        if isinstance(cond, X.Const) and not cond.value:
            return  # never runs: nothing to lower
        node = cur.append(ir.Loop(cond=cond, max_iters=s.max_iters), self.exprs.loc(s.pos, env))
        inner = env.copy()
        self.body(s.body, inner, cur.arm_cursor(node, 0))
        if inner.role != env.role:
            raise self.exprs.err("a role block must open and close inside the loop body", s.pos, env)
        self.merge(env, [inner], exhaustive=False)  # zero iterations are possible

    def for_(self, s: A.For, env: Env, cur: ir.Cursor) -> None:
        self.check_new_name(s.var, s.pos, env)
        it = self.exprs.expr(s.iter, env)
        if isinstance(it, X.Const):
            values = it.value
            if isinstance(values, str) or not isinstance(values, tuple):
                raise self.exprs.err(f"for needs a list or range(...) to loop over, got {values!r}", s.iter.pos, env)
            if len(values) > MAX_UNROLL:
                raise self.exprs.err(f"for over {len(values)} constant values is more than {MAX_UNROLL}, the most "
                                     "sglc unrolls", s.iter.pos, env)
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
        node = cur.append(ir.Loop(s.var, it), self.exprs.loc(s.pos, env))
        inner = env.copy()
        inner.locals.add(s.var)
        self.body(s.body, inner, cur.arm_cursor(node, 0))
        if inner.role != env.role:
            raise self.exprs.err("a role block must open and close inside the loop body", s.pos, env)
        self.merge(env, [inner], exhaustive=False)

    def inline_call(self, call: A.Call, env: Env, cur: ir.Cursor) -> Any:
        ref = self.exprs.lookup_func(call.func, env)
        assert ref is not None
        f = ref.func
        if f.name in env.calls or f.name == env.ref.func.name and not env.calls:
            raise self.exprs.err(f"recursive call of {f.name!r} is not supported", call.pos, env)
        bound: dict[str, Any] = {}
        positional = [a for a in call.args if a.name is None]
        if len(positional) > len(f.params):
            raise self.exprs.err(f"{call.func}() takes {len(f.params)} argument(s), got {len(positional)}", call.pos, env)
        seen_kw = False
        for i, a in enumerate(call.args):
            if a.name is None:
                if seen_kw:
                    raise self.exprs.err("positional argument after a keyword argument", a.pos, env)
                p = f.params[i]
            else:
                seen_kw = True
                p = next((p for p in f.params if p.name == a.name), None)
                if p is None:
                    raise self.exprs.err(f"{call.func}() has no parameter {a.name!r}", a.pos, env,
                                   f"parameters: {', '.join(x.name for x in f.params) or 'none'}")
            if p.name in bound:
                raise self.exprs.err(f"{call.func}() got parameter {p.name!r} twice", a.pos, env)
            value = self.exprs.expr(a.value, env)
            typ = self.type_name(p.type, dataclasses.replace(env, ref=ref))
            if isinstance(value, X.Const):
                self.check_type(value.value, typ, a.pos, env, f"argument {p.name!r} of {call.func}()")
            elif isinstance(value, X.Name) and value.fork is None and value.name in env.params and value.name not in env.aliases:
                have = env.params[value.name]
                if "any" not in (have, typ) and have != typ and not (have == "int" and typ == "float"):
                    raise self.exprs.err(f"argument {p.name!r} of {call.func}() must be {typ}, but {value.name!r} is {have}",
                                   a.pos, env)
            else:  # any other expression: its static type (generated text is a str)
                have_t, want = self.exprs.type_of(value, env), T.declared(typ)
                if "any" not in (have_t.name, want.name) and have_t.name != want.name and \
                        not (have_t.name in ("int", "bool") and want.name == "float"):
                    raise self.exprs.err(f"argument {p.name!r} of {call.func}() must be {typ}, but it is {have_t}",
                                         a.pos, env, f"convert it: {want}(...)" if have_t.name == "str" and
                                         want.name in ("int", "float", "bool") else None)
            bound[p.name] = value
        callee = Env(ref, env.params, calls=env.calls + (env.ref.func.name, f.name), gen=env.gen, role=env.role,
                      later_gens=all_gens(f.body, {}))
        for p in f.params:
            if p.name not in bound:
                if p.default is None:
                    raise self.exprs.err(f"{call.func}() is missing argument {p.name!r}", call.pos, env)
                bound[p.name] = self.exprs.expr(p.default, callee)
            callee.aliases[p.name] = (bound[p.name], {n.name: env.gen[n.name].version for n in X.names_in(bound[p.name])
                                                     if n.fork is None and n.name in env.gen})
        result = None
        for i, s in enumerate(f.body):
            if isinstance(s, A.Return):
                if i != len(f.body) - 1:
                    raise self.exprs.err("return must be the last statement of the function body", s.pos, callee)
                result = self.ret(s, callee, cur, None)
            else:
                self.stmt(s, callee, cur)
        if callee.role != env.role:
            raise self.exprs.err(f"{call.func}() leaves a role block open", call.pos, env)
        env.gen = callee.gen  # shared stream: the callee's variables are the caller's
        return result if result is not None else X.Const(None)


def lower_program(program: SourceProgram, functions: list[str] | None = None) -> dict[str, ir.IRFunction]:
    """IR for each function of the main module (or the named ones), in source order."""
    names = functions if functions is not None else program.entry_functions()
    low = Lowerer(program)
    try:
        return {n: low.lower_function(n) for n in names}
    except RecursionError:  # lowering recurses once per nesting level of blocks and expressions
        raise SglSemanticError(f"{program.module.file}: the program nests too deeply to compile (deep blocks or a "
                               "very long operator chain)", hint="split it into `let` variables or functions; "
                               "`sglc` accepts deeper programs than library calls") from None
