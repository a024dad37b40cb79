"""gen / select lowering for `.sgl` → IR (`GenLowerer`, owned by `compiler.irgen.build.Lowerer`): parameter names,
types and constant-ness are checked here, with a did-you-mean hint for unknown parameters."""
from __future__ import annotations

import difflib
import json
import re
from typing import Any

from sglang.lang import ir
from sglang.lang.ir import expr as X
from sglang.lang.sgl import nodes as A
from sglang.compiler.irgen.exprs import ExprLowerer
from sglang.compiler.irgen.scope import Env, Var

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
            if a.name == "dtype" and isinstance(a.value, A.Name) and a.value.id in ("int", "str", "float", "bool"):
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
        if isinstance(kw.get("stop"), str):
            kw["stop"] = (kw["stop"],)
        if isinstance(kw.get("json_schema"), dict):
            kw["json_schema"] = json.dumps(kw["json_schema"], sort_keys=True)
        try:
            op = ir.Gen(s.name, **kw)
        except TypeError as e:  # pragma: no cover - kw is filtered above
            raise self.exprs.err(str(e), s.pos, env) from None
        self.precheck_gen(op, s, env)
        cur.append(op, self.exprs.loc(s.pos, env))
        self.define(s.name, s.pos, env)

    def precheck_gen(self, op: ir.Gen, s: A.Gen, env: Env) -> None:
        probs = [
            (op.max_tokens is not None and op.max_tokens < 0, "max_tokens must be >= 0"),
            (op.temperature is not None and op.temperature < 0, "temperature must be >= 0"),
            (op.top_p is not None and not 0 < op.top_p <= 1, "top_p must be in (0, 1]"),
            (op.dtype is not None and op.dtype not in ("int", "str", "float", "bool"), "dtype must be int, str, float or bool"),
            (sum(x is not None for x in (op.regex, op.json_schema, op.dtype)) > 1, "use at most one of regex, json_schema, dtype"),
        ]
        for bad, msg in probs:
            if bad:
                raise self.exprs.err(f"gen {s.name!r}: {msg}", s.pos, env)
        if op.json_schema is not None:
            try:
                json.loads(op.json_schema)
            except ValueError as e:
                raise self.exprs.err(f"gen {s.name!r}: json_schema is not valid JSON: {e}", s.pos, env) from None
        if op.regex is not None:
            try:
                re.compile(op.regex)
            except re.error as e:
                raise self.exprs.err(f"gen {s.name!r}: bad regex: {e}", s.pos, env) from None

    def select(self, s: A.Gen | A.Select, args: list[A.Arg], env: Env, cur: ir.Cursor) -> None:
        args = list(args)
        if args and args[0].name is None:  # select x(["a", "b"]) == select x(choices=["a", "b"])
            args[0] = A.Arg("choices", args[0].value, args[0].pos)
        kw = self.gen_args(s, args, env, SELECT_PARAMS)
        if "choices" not in kw:
            raise self.exprs.err(f"select {s.name!r} needs choices=[...]", s.pos, env)
        choices = kw["choices"]
        if isinstance(choices, tuple) and not choices:
            raise self.exprs.err(f"select {s.name!r} needs at least one choice", s.pos, env)
        if isinstance(choices, (str, int, float, bool)):
            raise self.exprs.err("choices must be a list of strings", s.pos, env)
        method = kw.get("choices_method", "token_length_normalized")
        if method not in ir.CHOICES_METHODS:
            raise self.exprs.err(f"unknown choices_method {method!r}", s.pos, env, f"one of: {', '.join(ir.CHOICES_METHODS)}")
        temp = kw.get("temperature", 0.0)
        if not isinstance(temp, (int, float)) or isinstance(temp, bool):
            raise self.exprs.err("select temperature must be a number", s.pos, env)
        self.check_gen_name(s, env)
        cur.append(ir.Select(s.name, choices, method, float(temp)), self.exprs.loc(s.pos, env))
        self.define(s.name, s.pos, env)

    def check_gen_name(self, s: A.Gen | A.Select, env: Env) -> None:
        if s.name in env.params and s.name not in env.aliases:
            raise self.exprs.err(f"duplicate name {s.name!r}: cannot generate into a parameter", s.pos, env)
        if s.name in env.aliases or s.name in env.consts or s.name in env.locals or s.name in env.forks:
            raise self.exprs.err(f"duplicate name {s.name!r}: it is already a let, loop or fork name", s.pos, env)

    def define(self, name: str, pos: A.Pos, env: Env) -> None:
        prev = env.gen.get(name)
        env.gen[name] = Var(True, (prev.version + 1) if prev else 0, pos)
