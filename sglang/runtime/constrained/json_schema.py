"""JSON schema → a constraint whose every accepted document is valid under the schema.

Accepts a pydantic model class, a dict, a boolean, or a JSON string. The schema is first converted into
the grammar IR of schema_ir.py (one rule per `$ref` target; the terminals -- strings, numbers, formats,
patterns, property names -- come from json_lexical.py), then compiled by one of two engines:
- small, non-recursive schemas → ONE regex (`json_schema_to_regex`), i.e. a precomputed token FSM with
  ~µs masks and jump-forward;
- recursive or large schemas → a context-free grammar run by the exact Earley engine (cfg.py), whose
  terminals (strings, numbers, keys, enums) share their token walks across schemas (cfg_state.py) and
  whose compiled grammar is cached on disk by the grammar key's hash (cfg_cache.py).
`json_schema_constraint(schema)` picks the engine; `json_schema_info(schema)` also lists the warnings.

Coverage (JSON Schema drafts 4 to 2020-12): type (and lists), enum / const of any type, objects
(properties in declaration order, required, additionalProperties, patternProperties), arrays (items,
prefixItems / tuple items, additionalItems, minItems / maxItems), strings (min/maxLength, pattern,
format: date, time, date-time, duration, email, uuid, uri, uri-reference, hostname, ipv4, ipv6...),
integers (exact ranges), numbers (ranges: the integers and fixed-point decimals inside the range),
anyOf / oneOf (oneOf as anyOf) nested to any depth, allOf (schemas merged: types, properties, bounds,
enums intersected; anyOf members distributed), `$ref` into the document (`#`, `#/...` pointers, `$anchor`,
the root's own `$id`), recursion (exact in the grammar engine), boolean subschemas (`true` / `false`),
if/then/else where a subset can be enforced (ifs testing one property against constants become one
branch per constant; an `if` converted exactly, or one without `else`, is made true with its `then`),
minProperties / maxProperties on maps (objects of additional / pattern properties only).

Policy for what no grammar enforces: the keyword is ignored and a `SchemaWarning` names it (uniqueItems,
multipleOf, not, the other if/then/else, contains, min/maxProperties beside listed properties,
dependencies, unknown formats, ...). A
remote `$ref` (another document) cannot be fetched offline: it stands for any JSON value, with a warning.
Where the schema leaves properties open and lists some, the output holds the listed ones only (the best
engines do the same: it keeps outputs on-schema). Malformed schemas (a `$ref` into the document that
does not resolve, an unknown type, inverted bounds...) raise SchemaError with the JSON-pointer path.

Whitespace policy (`whitespace`): "compact" (none), "default" (at most one space after , and :), "pretty"
(any spaces/newlines/tabs), or a custom regex used between tokens.
"""
from __future__ import annotations

import functools
import json
import math
import re
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from sglang.runtime.constrained.errors import ConstraintError, SchemaError, SchemaWarning
from sglang.runtime.constrained.json_lexical import (BOOLEAN, FORMATS, FREE_FORMATS, INTEGER, NULL, NUMBER, STRING, STRING_CHAR,
                           any_value_regex, bounded_string_dfa, int_range_regex, json_literal, json_string_regex, key_excluding, key_terminal,
                           number_range_regex)
from sglang.runtime.constrained.schema_ir import ANY_RULE, EMPTY, Node, RegexTooLarge, T, alt, cyclic, opt, ref, rep, seq, solid, to_cfg, to_regex

WHITESPACE = {"compact": "", "default": "[ ]?", "pretty": r"[ \n\t]*"}
# validation keywords no grammar here enforces: ignored with a SchemaWarning
# (minProperties / maxProperties: `obj` enforces them on maps or warns itself)
_UNENFORCED = {"multipleOf", "uniqueItems", "dependentRequired",
               "dependentSchemas", "dependencies", "if", "then", "else", "not", "contains", "minContains",
               "maxContains", "propertyNames", "unevaluatedProperties", "unevaluatedItems"}
_STRUCTURAL = {"$defs", "definitions", "$schema", "$id", "id", "$anchor", "$comment", "$vocabulary",
               "$dynamicAnchor", "$recursiveAnchor"}
_TYPES = ("null", "boolean", "object", "array", "string", "integer", "number")
# regex engine while building the regex charges at most this many characters (its parts' lengths summed);
# larger (or recursive) schemas run on the CFG engine. Its compile is now cheaper (terminals shared across
# schemas), but its masks still cost milliseconds on a miss against microseconds for the regex engine's
# token table, and a mask is paid per generated token: so the line stays where the regex table's build
# cost, not the CFG compile, becomes the larger one.
REGEX_MAX = 4_000
MAX_COUNTED_LENGTH = 256  # longer maxLength bounds are tightened to this (every output stays valid)
GRAMMAR_PREFIX = "%json_schema "
CONVERTER_VERSION = 2  # part of the grammar key (and so of the disk cache key): bump when conversion changes  # ConstraintSpec.grammar of a JSON schema run on the CFG engine


def schema_to_dict(schema: Any) -> dict | bool:
    """A pydantic model class / dict / bool / JSON string → schema dict (or bool)."""
    if isinstance(schema, (dict, bool)):
        return schema
    if isinstance(schema, (str, bytes)):
        try:
            out = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
        if not isinstance(out, (dict, bool)):
            raise SchemaError(f"a schema must be a JSON object or boolean, got {type(out).__name__}")
        return out
    fn = getattr(schema, "model_json_schema", None)
    if callable(fn):
        return fn()
    raise SchemaError(f"expected a pydantic model class, dict or JSON string, got {type(schema).__name__}")


def whitespace_regex(whitespace: str) -> str:
    ws = WHITESPACE.get(whitespace, whitespace)
    if whitespace not in WHITESPACE:
        try:
            re.compile(ws)
        except re.error as exc:
            raise SchemaError(f"whitespace pattern {whitespace!r} is not a valid regex: {exc}") from None
    return ws


@dataclass
class SchemaGrammar:
    """A schema converted to the IR: the start node, one rule per `$ref` target, and the warnings."""

    start: Node
    rules: dict[str, Node]
    any_node: Node
    any_regex: str
    warnings: list[str] = field(default_factory=list)

    @functools.cached_property
    def recursive(self) -> bool:
        return cyclic(self.start, self.rules)

    def regex(self, max_depth: int = 3, limit: Optional[int] = None) -> Optional[str]:
        return to_regex(self.start, self.rules, self.any_regex, max_depth, limit)

    def cfg(self):
        return to_cfg(self.start, self.rules, self.any_node)


def schema_grammar(schema: Any, whitespace: str = "default", any_depth: int = 2) -> SchemaGrammar:
    """Convert a schema to the IR (raises SchemaError for a malformed schema or an empty language)."""
    ws = whitespace_regex(whitespace)
    root = schema_to_dict(schema)
    conv = _Converter(root, ws)
    start = conv.node(root, "#")
    if start is None:
        raise SchemaError("no JSON value satisfies the schema (every branch is empty)")
    return SchemaGrammar(start, conv.rules, conv.any_rule(), any_value_regex(ws, any_depth), conv.warnings)


def json_schema_to_regex(schema: Any, whitespace: str = "default", max_recursion_depth: int = 3,
                         any_depth: int = 2) -> str:
    """One regex for the schema (recursion unrolled `max_recursion_depth` levels, deeper branches dropped;
    "any value" nests `any_depth` levels). Ignored keywords are reported as SchemaWarnings."""
    g = schema_grammar(schema, whitespace, any_depth)
    _emit_warnings(g.warnings)
    out = g.regex(max_recursion_depth)
    if out is None:
        raise SchemaError("no JSON value satisfies the schema (every branch is empty or too deeply recursive)")
    return out


def json_schema_info(schema: Any, whitespace: str = "default") -> dict[str, Any]:
    """{"regex": str | None, "grammar": str | None, "recursive": bool, "warnings": [str]}: the engine the
    schema runs on (regex when it is small and not recursive, else the CFG grammar key `grammar`)."""
    g = schema_grammar(schema, whitespace)
    rx = None
    if not g.recursive:
        try:
            rx = g.regex(limit=REGEX_MAX)
        except RegexTooLarge:
            rx = None
    grammar = None
    if rx is None:
        payload = json.dumps({"schema": schema_to_dict(schema), "whitespace": whitespace,
                              "converter": CONVERTER_VERSION}, sort_keys=True)
        grammar = GRAMMAR_PREFIX + payload
        with _GRAMMARS_LOCK:  # schema_cfg(grammar) usually follows: keep the conversion
            if len(_GRAMMARS) >= 64:
                _GRAMMARS.pop(next(iter(_GRAMMARS)))
            _GRAMMARS[grammar] = g
    return {"regex": rx, "grammar": grammar, "recursive": g.recursive, "warnings": list(g.warnings)}


def json_schema_constraint(schema: Any, whitespace: str = "default") -> tuple[str, Optional[str]]:
    """(regex, grammar): the regex when the schema runs on the regex engine (grammar None), else ("",
    grammar key) for the CFG engine (`schema_cfg(grammar)` compiles it). Warnings are emitted."""
    info = json_schema_info(schema, whitespace)
    _emit_warnings(info["warnings"])
    return (info["regex"], None) if info["grammar"] is None else ("", info["grammar"])


_GRAMMARS: dict[str, SchemaGrammar] = {}  # grammar key -> its conversion (recent ones)
_GRAMMARS_LOCK = threading.Lock()


def is_schema_grammar(src: str) -> bool:
    return isinstance(src, str) and src.startswith(GRAMMAR_PREFIX)


def schema_cfg(src: str):
    """The CompiledCFG of a grammar key made by json_schema_constraint."""
    with _GRAMMARS_LOCK:
        g = _GRAMMARS.get(src)
    if g is None:
        payload = json.loads(src[len(GRAMMAR_PREFIX):])
        g = schema_grammar(payload["schema"], payload["whitespace"])
    return g.cfg()


def _emit_warnings(messages: list[str]) -> None:
    for m in messages:
        warnings.warn(m, SchemaWarning, stacklevel=3)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _type_set(s: dict) -> Optional[set[str]]:
    t = s.get("type")
    if t is None:
        return None
    ts = set(t) if isinstance(t, list) else {t}
    if "number" in ts:
        ts.add("integer")
    return ts


class _Converter:
    def __init__(self, root: Any, ws: str) -> None:
        self.root, self.ws = root, ws
        self.rules: dict[str, Optional[Node]] = {}
        self.warnings: list[str] = []
        self._anchors: dict[str, Any] = {}
        self._base = root.get("$id", root.get("id")) if isinstance(root, dict) else None
        self._index_anchors(root)
        self._any: Optional[Node] = None
        self._building: set[str] = set()  # rules being converted (a reference to one is recursion)
        self._expanding: set[str] = set()  # $refs being merged with their sibling keywords

    # ----- helpers -----
    def warn(self, msg: str, path: str) -> None:
        text = f"JSON schema at {path}: {msg}"
        if text not in self.warnings:
            self.warnings.append(text)

    def _index_anchors(self, s: Any) -> None:
        if isinstance(s, dict):
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(s.get(key), str):
                    self._anchors.setdefault("#" + s[key], s)
            for key in ("$id", "id"):
                if isinstance(s.get(key), str) and s[key].startswith("#"):
                    self._anchors.setdefault(s[key], s)
            for v in s.values():
                self._index_anchors(v)
        elif isinstance(s, list):
            for v in s:
                self._index_anchors(v)

    def any_rule(self) -> Node:
        """The recursive "any JSON value" rule body (the CFG engine's; the regex engine bounds it)."""
        if self._any is None:
            ws, v = self.ws, ref(ANY_RULE)
            sep = T(f"{ws},{ws}")
            member = seq(T(f"{STRING}{ws}:{ws}"), v)
            arr = seq(T(rf"\[{ws}"), opt(seq(v, rep(seq(sep, v), 0, None))), T(rf"{ws}\]"))
            obj = seq(T(rf"\{{{ws}"), opt(seq(member, rep(seq(sep, member), 0, None))), T(rf"{ws}\}}"))
            self._any = alt([T(f"({STRING}|{NUMBER}|{BOOLEAN}|{NULL})"), arr, obj])
        return self._any

    def resolve(self, r: Any, path: str) -> tuple[Optional[str], Any]:
        """(rule name, target schema) of a `$ref`; (None, None) for a remote reference (any value)."""
        if not isinstance(r, str):
            raise SchemaError(f"$ref must be a string, got {r!r}", path + "/$ref")
        if self._base and isinstance(self._base, str) and r.startswith(self._base.split("#")[0]) and \
                self._base.split("#")[0]:
            r = r[len(self._base.split("#")[0]):] or "#"
        if not r.startswith("#"):
            self.warn(f"remote $ref {r!r} cannot be fetched offline: any JSON value is allowed there", path)
            return None, None
        if r in self._anchors:
            return r, self._anchors[r]
        node: Any = self.root
        for part in [p for p in r[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~").replace("%25", "%")
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise SchemaError(f"$ref {r!r} does not resolve", path + "/$ref")
        return r, node

    # ----- schema → node -----
    def node(self, s: Any, path: str) -> Optional[Node]:
        if s is True:
            return ref(ANY_RULE)
        if s is False:
            return None
        if not isinstance(s, dict):
            raise SchemaError(f"expected an object or boolean, got {type(s).__name__}", path)
        if "$ref" in s:
            rest = {k: v for k, v in s.items() if k != "$ref" and _constraining(k)}
            r = s["$ref"]
            if not rest:
                return self._ref(r, path)
            if r in self._expanding:  # the target contains itself with these siblings: stop unfolding
                self.warn(f"keywords {sorted(rest)} beside a recursive $ref are ignored", path)
                return self._ref(r, path)
            self._expanding = self._expanding | {r}
            try:
                return self.node({**{k: v for k, v in s.items() if k not in rest and k != "$ref"},
                                  "allOf": [{"$ref": r}, rest]}, path)
            finally:
                self._expanding = self._expanding - {r}
        if "if" in s or "allOf" in s:
            got = self._conditional(s, path)
            if got is not _NOT_REWRITTEN:
                return got
        for key in ("anyOf", "oneOf"):  # before allOf: merging distributes over the branches
            if key in s:
                subs = s[key]
                if not isinstance(subs, list) or not subs:
                    raise SchemaError(f"{key} must be a non-empty list", f"{path}/{key}")
                base = {k: v for k, v in s.items() if k != key}
                if not any(_constraining(k) for k in base):
                    return alt([self.node(sub, f"{path}/{key}/{i}") for i, sub in enumerate(subs)])
                return alt([self.node({"allOf": [base, sub]}, f"{path}/{key}/{i}") for i, sub in enumerate(subs)])
        if "allOf" in s:
            return self.node(self.merge_all(s, path), path)
        self._warn_unenforced(s, path)
        types = _type_set(s)
        if types is not None:
            bad = types - set(_TYPES)
            if bad:
                raise SchemaError(f"unknown type {sorted(bad)[0]!r}", path + "/type")
        if "const" in s or "enum" in s:
            return self.values(s, types, path)
        if types is None:
            types = self._implied_types(s)
        if types is None:
            return ref(ANY_RULE)
        parts = []
        for t in _TYPES:
            if t in types and not (t == "integer" and "number" in types):
                parts.append(self.typed(t, s, path))
        return alt(parts)

    def _conditional(self, s: dict, path: str) -> Any:
        """`if`/`then`/`else` (on `s` itself or as `allOf` members) as branches the grammar can enforce,
        or _NOT_REWRITTEN (the keywords are then ignored with a warning):
        - ifs that test one property against constants (`"if": {"properties": {"kind": {"const": "a"}}}`,
          the usual discriminator) become one `anyOf` branch per constant, the property required and set,
          with that constant's `then`s and the other ifs' `else`s (plus, when the property has an `enum`,
          one branch for its other values with every `else`);
        - any other `if` + `then` becomes `allOf [if, then]`: a subset when there is no `else` (an output
          the real `if` rejects is valid without `then` too), or when the `if` converts with no ignored
          keyword (every output then satisfies it, so `else` never applies).
        A rewrite whose language comes out empty is dropped."""
        conds = [("", s)] if "if" in s else []
        members = s.get("allOf") if isinstance(s.get("allOf"), list) else []
        conds += [(i, m) for i, m in enumerate(members) if isinstance(m, dict) and "if" in m and
                  set(m) <= _CONDITIONAL_KEYS]
        if not conds:
            return _NOT_REWRITTEN
        rest = {k: v for k, v in s.items() if k not in ("if", "then", "else")}
        keep = [m for i, m in enumerate(members) if all(i != j for j, _ in conds)]
        if "allOf" in rest:
            rest["allOf"] = keep
            if not keep:
                del rest["allOf"]
        found = _discriminated(c for _, c in conds)
        if found is not None:
            branches = self._discriminator_branches(s, *found)
            if branches and not any(k in rest for k in ("anyOf", "oneOf")):
                rest["anyOf"] = branches
            else:
                return _NOT_REWRITTEN
        elif all("else" not in c or self._exact(c["if"], path) for _, c in conds):
            rest.setdefault("allOf", [])
            rest["allOf"] = list(rest["allOf"]) + [{"allOf": [c["if"], c.get("then", True)]} for _, c in conds]
        else:
            return _NOT_REWRITTEN
        saved = list(self.warnings)
        got = self.node(rest, path)  # `rest` holds no `if` any more: no second rewrite
        if got is None:
            self.warnings = saved
            return _NOT_REWRITTEN
        return got

    def _exact(self, sub: Any, path: str) -> bool:
        """Whether `sub` converts with no keyword ignored (its grammar is exactly its language)."""
        saved = list(self.warnings)
        try:
            self.node(sub, path + "/if")
        except SchemaError:
            return False
        finally:
            exact = self.warnings == saved
            self.warnings = saved
        return exact

    def _discriminator_branches(self, s: dict, prop: str, cases: list[tuple[Any, Any, Any]]) -> list[Any]:
        """One schema per constant of the discriminating property (see `_conditional`)."""
        out = []
        consts = []
        for c, _, _ in cases:
            if c not in consts:
                consts.append(c)
        for c in consts:
            parts = [t for c2, t, _ in cases if c2 == c and t is not None]
            parts += [e for c2, _, e in cases if c2 != c and e is not None]
            out.append({"properties": {prop: {"const": c}}, "required": [prop], **({"allOf": parts} if parts else {})})
        base = (s.get("properties") or {}).get(prop)
        others = [v for v in base["enum"] if v not in consts] if isinstance(base, dict) and \
            isinstance(base.get("enum"), list) else []
        if others:
            elses = [e for _, _, e in cases if e is not None]
            out.append({"properties": {prop: {"enum": others}}, "required": [prop],
                        **({"allOf": elses} if elses else {})})
        return out

    def _ref(self, r: Any, path: str) -> Optional[Node]:
        name, target = self.resolve(r, path)
        if name is None:
            return ref(ANY_RULE)
        if name in self.rules:
            if self.rules[name] is None and name not in self._building:
                return None  # the target's language is empty
            return ref(name)
        self.rules[name] = None
        self._building = self._building | {name}
        try:
            body = self.node(target, name)
        finally:
            self._building = self._building - {name}
        self.rules[name] = body
        return None if body is None else ref(name)

    def _implied_types(self, s: dict) -> Optional[set[str]]:
        found = set()
        if any(k in s for k in ("properties", "additionalProperties", "patternProperties", "required")):
            found.add("object")
        if any(k in s for k in ("items", "prefixItems", "minItems", "maxItems", "additionalItems")):
            found.add("array")
        if any(k in s for k in ("minLength", "maxLength", "pattern", "format")):
            found.add("string")
        if any(k in s for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            found |= {"number", "integer"}
        # a schema with object keywords and no type also admits other types; producing only the implied
        # type(s) is a subset of what it admits, and what the schema's author means
        return found or None

    def _warn_unenforced(self, s: dict, path: str) -> None:
        for k in sorted(_UNENFORCED & set(s)):
            v = s[k]
            if (k == "uniqueItems" and v is False) or (k == "multipleOf" and v == 1 and
                                                      _type_set(s) == {"integer"}) or \
                    (k in ("minProperties", "minContains") and v == 0):
                continue
            self.warn(f"keyword {k!r} cannot be enforced by constrained decoding and is ignored", path)

    def values(self, s: dict, types: Optional[set[str]], path: str) -> Optional[Node]:
        if "const" in s:
            vals = [s["const"]]
        else:
            vals = s["enum"]
            if not isinstance(vals, list) or not vals:
                raise SchemaError("enum must be a non-empty list", path + "/enum")
        if "const" in s and "enum" in s:
            vals = [v for v in vals if v in s["enum"]]
        if types is not None:
            vals = [v for v in vals if _json_type(v) in types]
        return alt([T(json_literal(v)) for v in vals])

    def typed(self, t: str, s: dict, path: str) -> Optional[Node]:
        if t == "object":
            return self.obj(s, path)
        if t == "array":
            return self.array(s, path)
        if t == "string":
            return self.string(s, path)
        if t == "integer":
            return self.integer(s, path)
        if t == "number":
            return self.number(s, path)
        return T(BOOLEAN if t == "boolean" else NULL)

    # ----- allOf -----
    def merge_all(self, s: dict, path: str, depth: int = 0) -> Any:
        """allOf → one schema: every member (refs resolved) merged into the siblings."""
        subs = s["allOf"]
        if not isinstance(subs, list) or not subs:
            raise SchemaError("allOf must be a non-empty list", path + "/allOf")
        out: Any = {k: v for k, v in s.items() if k != "allOf"}
        for i, sub in enumerate(subs):
            sub = self.expand(sub, f"{path}/allOf/{i}", depth)
            out = _merge(out, sub, self, f"{path}/allOf")
            if out is False:
                return False
        return out

    def expand(self, sub: Any, path: str, depth: int) -> Any:
        """A member of allOf with its own $ref / allOf resolved (depth-bounded: recursive refs stay refs)."""
        if depth > 8:
            return sub
        if isinstance(sub, dict) and "$ref" in sub:
            name, target = self.resolve(sub["$ref"], path)
            rest = {k: v for k, v in sub.items() if k != "$ref"}
            if name is None:
                target = True
            target = self.expand(target, name or path, depth + 1)
            if target is True:
                return rest
            if target is False:
                return False
            sub = _merge(dict(target), rest, self, path) if rest else target
        if isinstance(sub, dict) and "allOf" in sub:
            sub = self.merge_all(sub, path, depth + 1)
        return sub

    # ----- objects -----
    def obj(self, s: dict, path: str) -> Optional[Node]:
        ws = self.ws
        props = s.get("properties") or {}
        if not isinstance(props, dict):
            raise SchemaError("properties must be an object", path + "/properties")
        pattern_props = s.get("patternProperties") or {}
        extra = s.get("additionalProperties", None)
        required = [r for r in (s.get("required") or []) if isinstance(r, str)]
        props = dict(props)
        for name in required:
            if name not in props:  # required but only allowed as an additional / pattern property
                props[name] = _pattern_schema(name, pattern_props) or (extra if extra is not None else True)
        required_set = set(required)
        items: list[tuple[Node, bool, bool]] = []  # (item, required, repeatable)
        for name, sub in props.items():
            value = self.node(sub, f"{path}/properties/{_escape_pointer(name)}")
            if value is None:
                if name in required_set:
                    return None
                continue
            items.append((seq(key_terminal(name, ws), value), name in required_set, False))
        extras = []
        for pat, sub in pattern_props.items():
            key = self.pattern_string(pat, f"{path}/patternProperties")
            value = self.node(sub, f"{path}/patternProperties/{_escape_pointer(pat)}")
            if key is not None and value is not None:
                extras.append(seq(T(f"{key}{ws}:{ws}"), value))
        if extra is not None and extra is not False or (extra is None and not props and not pattern_props):
            value = self.node(True if extra is None else extra, path + "/additionalProperties")
            if value is not None:
                extras.append(seq(key_excluding(list(props)), T(f"{ws}:{ws}"), value))
        if not items and extras and ("minProperties" in s or "maxProperties" in s):
            return self._counted_members(s, alt(extras), path)
        for k in ("minProperties", "maxProperties"):
            if k in s and not (k == "minProperties" and s[k] <= len(required_set)):
                self.warn(f"keyword {k!r} cannot be enforced by constrained decoding and is ignored", path)
        if extras:
            items.append((alt(extras), False, True))
        return seq(T(rf"\{{{ws}"), _member_list(items, T(f"{ws},{ws}")), T(rf"{ws}\}}"))

    def _counted_members(self, s: dict, member: Node, path: str) -> Optional[Node]:
        """An object of only additional / pattern properties, minProperties..maxProperties of them
        (the usual "a map of at least one entry", or "exactly one step")."""
        ws = self.ws
        lo, hi = int(s.get("minProperties", 0) or 0), s.get("maxProperties")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise SchemaError(f"maxProperties {hi} < minProperties {lo}", path)
        if hi == 0:
            return T(rf"\{{{ws}\}}")
        body = seq(member, rep(seq(T(f"{ws},{ws}"), member), max(lo, 1) - 1, None if hi is None else hi - 1))
        return seq(T(rf"\{{{ws}"), body if lo > 0 else opt(body), T(rf"{ws}\}}"))

    # ----- arrays -----
    def array(self, s: dict, path: str) -> Optional[Node]:
        ws = self.ws
        lo = int(s.get("minItems", 0) or 0)
        hi = s.get("maxItems")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise SchemaError(f"maxItems {hi} < minItems {lo}", path)
        if "prefixItems" in s:
            prefix, rest = s["prefixItems"], s.get("items", True)
        elif isinstance(s.get("items"), list):
            prefix, rest = s["items"], s.get("additionalItems", True)
        else:
            prefix, rest = [], s.get("items", True)
        if s.get("uniqueItems") and (hi is None or hi > 1):
            pass  # warned by _warn_unenforced
        elems = [self.node(p, f"{path}/prefixItems/{i}") for i, p in enumerate(prefix)]
        rest_node = self.node(rest, path + "/items")
        sep = T(f"{ws},{ws}")

        def tail(k: int) -> Optional[Node]:
            """The elements from index k on, each preceded by a comma (k >= 1)."""
            if hi is not None and k >= hi:
                return EMPTY
            if k >= len(elems):
                r_hi = None if hi is None else hi - k
                return rep(seq(sep, rest_node), max(lo - k, 0), r_hi)
            more = seq(sep, elems[k], tail(k + 1))
            return more if k < lo else opt(more)

        first = elems[0] if elems else rest_node
        body = seq(first, tail(1)) if hi != 0 else EMPTY
        if lo == 0 and hi != 0:
            body = opt(body)
        return seq(T(rf"\[{ws}"), body, T(rf"{ws}\]"))

    # ----- scalars -----
    def string(self, s: dict, path: str) -> Optional[Node]:
        lo = int(s.get("minLength", 0) or 0)
        hi = s.get("maxLength")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise SchemaError(f"maxLength {hi} < minLength {lo}", path)
        if "pattern" in s:
            rx = self.pattern_string(s["pattern"], path)
            if rx is not None:
                if lo or hi is not None:
                    self.warn("minLength/maxLength together with pattern: only the pattern is enforced", path)
                return T(rx)
        fmt = s.get("format")
        if isinstance(fmt, str) and fmt not in FORMATS and fmt not in FREE_FORMATS:
            self.warn(f"string format {fmt!r} is not enforced (any string is allowed)", path)
        if fmt in FORMATS and not lo and hi is None:
            return T(FORMATS[fmt])
        if lo == 0 and hi is None:
            return T(STRING)
        if hi is not None and hi > MAX_COUNTED_LENGTH:
            hi = max(lo, MAX_COUNTED_LENGTH)  # a subset of the allowed lengths keeps the automaton small
        rx = f'"{STRING_CHAR}{{{lo},{"" if hi is None else hi}}}"'
        if (hi if hi is not None else lo) <= 8:
            return T(rx)
        return solid(rx, functools.partial(bounded_string_dfa, lo, hi), trimmed=True)

    def pattern_string(self, pat: Any, path: str) -> Optional[str]:
        """A JSON string literal regex whose content fully matches `pat` (anchors dropped: a full match is
        also a search match); None with a warning when the pattern cannot be translated."""
        if not isinstance(pat, str):
            raise SchemaError("pattern must be a string", path + "/pattern")
        try:
            body = json_string_regex(pat)
        except ConstraintError as exc:
            self.warn(f"pattern {pat!r} is not supported ({exc}); any string is allowed", path)
            return None
        return f'"{body}"'

    def integer(self, s: dict, path: str) -> Optional[Node]:
        lo, lo_x, hi, hi_x = _raw_bounds(s)
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
        if ilo is None and ihi is None:
            return T(INTEGER)
        if ilo is not None and ihi is not None and ilo > ihi:
            return None
        return T(int_range_regex(ilo, ihi))

    def number(self, s: dict, path: str) -> Optional[Node]:
        lo, lo_x, hi, hi_x = _raw_bounds(s)
        if lo is None and hi is None:
            return T(NUMBER)
        rx = number_range_regex(lo, lo_x, hi, hi_x)
        return None if rx is None else T(rx)


_NOT_REWRITTEN = object()
_CONDITIONAL_KEYS = {"if", "then", "else", "$comment", "description", "title"}


def _discriminated(conds: Any) -> Optional[tuple[str, list[tuple[Any, Any, Any]]]]:
    """(property, [(constant, then, else)]) when every `if` tests the same single property against one
    constant (and requires nothing else), else None."""
    prop, cases = None, []
    for c in conds:
        cond = c["if"]
        if not isinstance(cond, dict) or not set(cond) <= {"properties", "required", "$comment", "type"}:
            return None
        props = cond.get("properties")
        if not isinstance(props, dict) or len(props) != 1:
            return None
        (p, sub), = props.items()
        if not isinstance(sub, dict) or not set(sub) <= {"const", "enum", "type"} or not (set(cond.get("required") or []) <= {p}):
            return None
        if "const" in sub:
            value = sub["const"]
        elif isinstance(sub.get("enum"), list) and len(sub["enum"]) == 1:
            value = sub["enum"][0]
        else:
            return None
        if prop is not None and p != prop:
            return None
        prop = p
        cases.append((value, c.get("then"), c.get("else")))
    return (prop, cases) if prop is not None else None


def _constraining(k: str) -> bool:
    return k not in _STRUCTURAL and k not in {"title", "description", "examples", "default", "deprecated",
                                              "readOnly", "writeOnly", "discriminator", "nullable",
                                              "markdownDescription", "x-intellij-html-description",
                                              "enumDescriptions", "markdownEnumDescriptions", "errorMessage"} \
        and not k.startswith("x-")


def _escape_pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _pattern_schema(name: str, pattern_props: dict) -> Any:
    for pat, sub in pattern_props.items():
        try:
            if re.search(pat, name):
                return sub
        except re.error:
            continue
    return None


def _member_list(items: list[tuple[Node, bool, bool]], sep: Node) -> Optional[Node]:
    """Comma-separated members in order: each optional one may be absent, required ones present, the
    repeatable (last) one any number of times. Built back to front so its size is linear:
    X_k = the members from k on, non-empty, holding every required one."""
    x: Optional[Node] = None
    any_req_after = False
    any_req = any(r for _, r, _ in items)
    for item, req, repeat in reversed(items):
        it = seq(item, rep(seq(sep, item), 0, None)) if repeat else item
        if x is None:
            x = it
        elif req:
            x = seq(it, sep, x) if any_req_after else seq(it, opt(seq(sep, x)))
        elif any_req_after:
            x = seq(opt(seq(it, sep)), x)
        else:
            x = alt([it, seq(opt(seq(it, sep)), x)])
        any_req_after = any_req_after or req
    if x is None:
        return EMPTY
    return x if any_req else opt(x)


def _merge(a: Any, b: Any, conv: _Converter, path: str) -> Any:
    """The schema of values valid under both `a` and `b` (a sound merge; unmergeable pairs keep `a`'s
    keyword and warn)."""
    if a is False or b is False:
        return False
    if a is True or a == {}:
        return b if isinstance(b, (dict, bool)) else a
    if b is True or b == {}:
        return a
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
            continue
        u = out[k]
        if k == "type":
            ta = set(u) if isinstance(u, list) else {u}
            tb = set(v) if isinstance(v, list) else {v}
            both = (ta & tb) | ({"integer"} if ("integer" in ta and "number" in tb) or
                                ("number" in ta and "integer" in tb) else set())
            if not both:
                return False
            out[k] = sorted(both)
        elif k == "properties":
            props = dict(u)
            for name, sub in v.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[k] = props
        elif k == "required":
            out[k] = list(dict.fromkeys(list(u) + list(v)))
        elif k in ("minimum", "minLength", "minItems", "minProperties", "exclusiveMinimum") and \
                not isinstance(u, bool) and not isinstance(v, bool):
            out[k] = max(u, v)
        elif k in ("maximum", "maxLength", "maxItems", "maxProperties", "exclusiveMaximum") and \
                not isinstance(u, bool) and not isinstance(v, bool):
            out[k] = min(u, v)
        elif k == "enum":
            out[k] = [x for x in u if x in v]
            if not out[k]:
                return False
        elif k == "const":
            if u != v:
                return False
        elif k in ("items", "additionalProperties", "additionalItems") and not isinstance(u, list) \
                and not isinstance(v, list):
            out[k] = {"allOf": [u, v]}
        elif k in ("anyOf", "oneOf"):
            out.setdefault("allOf", [])
            out["allOf"] = list(out.get("allOf", [])) + [{k: v}]
        elif k == "patternProperties":
            out[k] = {**u, **v}
        elif k == "allOf":
            out[k] = list(u) + list(v)
        elif u != v and _constraining(k):
            conv.warn(f"allOf members disagree on {k!r} ({u!r} vs {v!r}); the first is enforced", path)
    for closed in (a, b):  # additionalProperties false closes the object to that member's own properties
        if isinstance(closed, dict) and closed.get("additionalProperties") is False and "properties" in out:
            own = set(closed.get("properties") or {})
            if any(r not in own for r in out.get("required") or []):
                return False
            out["properties"] = {k: v for k, v in out["properties"].items() if k in own}
    return out


def _raw_bounds(s: dict) -> tuple[Optional[float], bool, Optional[float], bool]:
    """(lo, lo exclusive, hi, hi exclusive), draft-4 boolean exclusives included."""
    lo, hi = s.get("minimum"), s.get("maximum")
    lo_x = hi_x = False
    xm, xM = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
    if isinstance(xm, bool):
        lo_x = xm and lo is not None
    elif isinstance(xm, (int, float)) and (lo is None or xm >= lo):
        lo, lo_x = xm, True
    if isinstance(xM, bool):
        hi_x = xM and hi is not None
    elif isinstance(xM, (int, float)) and (hi is None or xM <= hi):
        hi, hi_x = xM, True
    lo = lo if isinstance(lo, (int, float)) and not isinstance(lo, bool) else None
    hi = hi if isinstance(hi, (int, float)) and not isinstance(hi, bool) else None
    return lo, lo_x and lo is not None, hi, hi_x and hi is not None


