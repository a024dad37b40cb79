"""gen / select lowering for `.sgl` → IR (`GenLowerer`, owned by `compiler.irgen.build.Lowerer`): parameter names,
types and constant-ness are checked here, with a did-you-mean hint for unknown parameters."""
from __future__ import annotations

import difflib
from typing import Any

from sglang.lang import ir
from sglang.lang.gen_rules import (CHOICES_METHODS, DTYPES, GEN_KEYWORDS, SELECT_KEYWORDS, gen_problems,
                                  json_schema_text, normalize_dtype, select_problems)
from sglang.lang.ir import expr as X
from sglang.lang.ir import types as T
from sglang.lang.sgl import nodes as A
from sglang.compiler.irgen.exprs import ExprLowerer
from sglang.compiler.irgen.scope import Env, Var

# the `.sgl` constant type of each gen keyword (the names themselves come from lang/gen_rules.py)
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "max_tokens": ((int,), "an int"), "min_tokens": ((int,), "an int"), "stop": ((str, tuple), "a string or list of strings"),
    "stop_token_ids": ((tuple,), "a list of ints"), "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"), "top_k": ((int,), "an int"), "min_p": ((int, float), "a number"),
    "frequency_penalty": ((int, float), "a number"), "presence_penalty": ((int, float), "a number"),
    "repetition_penalty": ((int, float), "a number"), "ignore_eos": ((bool,), "true or false"),
    "regex": ((str,), "a string"), "json_schema": ((str, dict), "a JSON schema (dict or string)"),
    "dtype": ((str,), "one of " + ", ".join(DTYPES)), "return_logprob": ((bool,), "true or false"),
    "logprob_start_len": ((int,), "an int"), "top_logprobs_num": ((int,), "an int"),
    "return_text_in_logprobs": ((bool,), "true or false"), "choices": ((tuple,), "a list of strings"),
    "choices_method": ((str,), "a string"),
}
GEN_PARAMS = {name: _PARAM_TYPES[name] for name in GEN_KEYWORDS}  # a KeyError here: a new gen keyword needs a type


class GenLowerer:
    """gen / select statements → `ir.Gen` / `ir.Select`; expressions and errors go through the `ExprLowerer`."""

    def __init__(self, exprs: ExprLowerer) -> None:
        self.exprs = exprs

    def gen_args(self, s: A.Gen | A.Select, args: list[A.Arg], env: Env, allowed: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in args:
            if a.name is None:
                raise self.exprs.err(f"{'gen' if isinstance(s, A.Gen) else 'select'} takes keyword arguments, like max_tokens=64",
                               a.pos, env)
            if a.name not in allowed:
                close = difflib.get_close_matches(a.name, allowed, 1)
                raise self.exprs.err(f"unknown {'gen' if isinstance(s, A.Gen) else 'select'} parameter {a.name!r}", a.pos, env,
                               f"did you mean {close[0]!r}?" if close else f"parameters: {', '.join(allowed)}")
            if a.name in out:
                raise self.exprs.err(f"duplicate parameter {a.name!r}", a.pos, env)
            if a.name == "dtype" and isinstance(a.value, A.Name) and a.value.id in DTYPES:
                out[a.name] = a.value.id
                continue
            if a.name == "choices":
                value = self.exprs.expr(a.value, env)
                out[a.name] = value.value if isinstance(value, X.Const) else value
                if isinstance(out[a.name], tuple) and not all(isinstance(c, str) for c in out[a.name]):
                    raise self.exprs.err("choices must be strings", a.pos, env)
                continue
            value = self.exprs.const_value(a.value, env, f"gen parameter {a.name!r}")
            types, desc = GEN_PARAMS[a.name]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
                raise self.exprs.err(f"gen parameter {a.name!r} must be {desc}, got {value!r}", a.pos, env)
            if a.name == "stop" and isinstance(value, tuple) and not all(isinstance(x, str) for x in value):
                raise self.exprs.err("gen parameter 'stop' must be a string or list of strings", a.pos, env)
            if a.name == "stop_token_ids" and not all(isinstance(x, int) for x in value):
                raise self.exprs.err("gen parameter 'stop_token_ids' must be a list of ints", a.pos, env)
            out[a.name] = value
        return out

    def gen(self, s: A.Gen, env: Env, cur: ir.Cursor) -> None:
        kw = self.gen_args(s, s.args, env, tuple(GEN_PARAMS))
        if "choices" in kw:  # gen(choices=...) is a select, as in SGLang
            self.select(s, s.args, env, cur)
            return
        if "choices_method" in kw:
            raise self.exprs.err(f"gen {s.name!r}: choices_method needs choices=[...]", s.pos, env)
        self.check_gen_name(s, env)
        if "dtype" in kw:  # the spellings the Python frontend takes ("integer", "string", ...)
            try:
                kw["dtype"] = normalize_dtype(kw["dtype"])
            except ValueError as e:
                raise self.exprs.err(f"gen {s.name!r}: {e}", s.pos, env) from None
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        if isinstance(kw.get("json_schema"), dict):
            kw["json_schema"] = json_schema_text(kw["json_schema"])
        try:
            op = ir.Gen(s.name, **kw)
        except TypeError as e:  # pragma: no cover - kw is filtered above
            raise self.exprs.err(str(e), s.pos, env) from None
        self.precheck_gen(op, s, env)
        cur.append(op, self.exprs.loc(s.pos, env))
        self.define(s.name, s.pos, env, T.gen_type(op))

    def precheck_gen(self, op: ir.Gen, s: A.Gen, env: Env) -> None:
        problems = gen_problems(op)
        if problems:
            raise self.exprs.err(f"gen {s.name!r}: {problems[0]}", s.pos, env)

    def select(self, s: A.Gen | A.Select, args: list[A.Arg], env: Env, cur: ir.Cursor) -> None:
        args = list(args)
        if args and args[0].name is None:  # select x(["a", "b"]) == select x(choices=["a", "b"])
            args[0] = A.Arg("choices", args[0].value, args[0].pos)
        kw = self.gen_args(s, args, env, SELECT_KEYWORDS)
        choices = kw.get("choices")
        method = kw.get("choices_method", CHOICES_METHODS[0])
        temp = kw.get("temperature", 0.0)
        problems = select_problems(choices, method, temp)
        if problems:
            raise self.exprs.err(f"select {s.name!r}: {problems[0]}", s.pos, env)
        self.check_gen_name(s, env)
        op = ir.Select(s.name, choices, method, float(temp))
        cur.append(op, self.exprs.loc(s.pos, env))
        self.define(s.name, s.pos, env, T.select_type(op))

    def check_gen_name(self, s: A.Gen | A.Select, env: Env) -> None:
        if s.name in env.params and s.name not in env.aliases:
            raise self.exprs.err(f"duplicate name {s.name!r}: cannot generate into a parameter", s.pos, env)
        if s.name in env.aliases or s.name in env.consts or s.name in env.locals or s.name in env.forks:
            raise self.exprs.err(f"duplicate name {s.name!r}: it is already a let, loop or fork name", s.pos, env)

    def define(self, name: str, pos: A.Pos, env: Env, ty: T.Ty) -> None:
        prev = env.gen.get(name)
        env.gen[name] = Var(True, (prev.version + 1) if prev else 0, pos, ty)
