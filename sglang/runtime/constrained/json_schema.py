"""JSON schema → regex (whose every match is a JSON document valid under the schema).

Accepts a pydantic model class, a dict, or a JSON string. Supported: object (properties in declaration
order, required/optional, additionalProperties for property-less objects), array (items, prefixItems,
minItems/maxItems), string (minLength/maxLength, pattern, format date/time/date-time/uuid/email), enum,
const, number/integer (minimum/maximum enforced for integers by digit-range regexes; for numbers a
minimum >= 0 drops the sign, other number bounds are refused), boolean, null, type lists, anyOf/oneOf
(oneOf as anyOf), allOf of one schema, `$ref` into `$defs`/`definitions` (recursion unrolled to
`max_recursion_depth`, deeper branches dropped), `{}`/`true` = any JSON value of bounded nesting. Validation keywords a regex cannot enforce
(multipleOf, uniqueItems, min/maxProperties, not, if/then/else, ...) are refused with a SchemaError.

Whitespace policy (`whitespace`): "compact" (none), "default" (at most one space after , and :), "pretty"
(any spaces/newlines/tabs), or a custom regex used between tokens.
"""
from __future__ import annotations

import json
import re
from typing import Any, Optional

from sglang.runtime.constrained.errors import SchemaError

STRING_CHAR = r'([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
STRING = f'"{STRING_CHAR}*"'
INTEGER = r"-?(0|[1-9][0-9]*)"
NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
BOOLEAN = r"(true|false)"
NULL = r"null"
FORMATS = {
    "date": r'"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"',
    "time": r'"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?"',
    "date-time": r'"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]'
                 r'(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"',
    "uuid": r'"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"',
    "email": r'"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}"',
}
WHITESPACE = {"compact": "", "default": "[ ]?", "pretty": r"[ \n\t]*"}
# validation keywords the regex cannot enforce: refused rather than silently ignored
_UNENFORCED = {"multipleOf", "uniqueItems", "minProperties", "maxProperties", "patternProperties",
               "dependentRequired", "dependentSchemas", "dependencies", "if", "then", "else", "not", "contains",
               "minContains", "maxContains", "propertyNames", "unevaluatedProperties", "unevaluatedItems"}
_ANNOTATIONS = {"title", "description", "examples", "default", "$schema", "$id", "$comment", "deprecated",
                "readOnly", "writeOnly", "discriminator"}


def schema_to_dict(schema: Any) -> dict | bool:
    """A pydantic model class / dict / JSON string → schema dict."""
    if isinstance(schema, (dict, bool)):
        return schema
    if isinstance(schema, (str, bytes)):
        try:
            out = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
        if not isinstance(out, (dict, bool)):
            raise SchemaError(f"a schema must be a JSON object, got {type(out).__name__}")
        return out
    fn = getattr(schema, "model_json_schema", None)
    if callable(fn):
        return fn()
    raise SchemaError(f"expected a pydantic model class, dict or JSON string, got {type(schema).__name__}")


def json_schema_to_regex(schema: Any, whitespace: str = "default", max_recursion_depth: int = 3,
                         any_depth: int = 2) -> str:
    ws = WHITESPACE.get(whitespace, whitespace)
    if whitespace not in WHITESPACE:
        try:
            re.compile(ws)
        except re.error as exc:
            raise SchemaError(f"whitespace pattern {whitespace!r} is not a valid regex: {exc}") from None
    root = schema_to_dict(schema)
    conv = _Converter(root, ws, max_recursion_depth, any_depth)
    out = conv.convert(root, "#", ())
    if out is None:
        raise SchemaError("no JSON value satisfies the schema (every branch is empty or too deeply recursive)")
    return out


def _alt(parts: list[Optional[str]]) -> Optional[str]:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"


def _literal(value: Any) -> str:
    return re.escape(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class _Converter:
    def __init__(self, root: Any, ws: str, max_depth: int, any_depth: int) -> None:
        self.root, self.ws, self.max_depth, self.any_depth = root, ws, max_depth, any_depth

    def convert(self, s: Any, path: str, refs: tuple[str, ...]) -> Optional[str]:
        if s is True or s == {}:
            return self.any_value(self.any_depth)
        if s is False:
            return None
        if not isinstance(s, dict):
            raise SchemaError(f"expected an object or boolean, got {type(s).__name__}", path)
        bad = sorted(_UNENFORCED & set(s))
        if bad:
            raise SchemaError(f"keyword(s) {bad} cannot be enforced by constrained decoding", path)
        if "$ref" in s:
            return self.ref(s["$ref"], path, refs)
        if "const" in s:
            return _literal(s["const"])
        if "enum" in s:
            if not isinstance(s["enum"], list) or not s["enum"]:
                raise SchemaError("enum must be a non-empty list", path + "/enum")
            return _alt([_literal(v) for v in s["enum"]])
        for key in ("anyOf", "oneOf"):
            if key in s:
                subs = s[key]
                if not isinstance(subs, list) or not subs:
                    raise SchemaError(f"{key} must be a non-empty list", f"{path}/{key}")
                base = {k: v for k, v in s.items() if k != key}
                return _alt([self.convert({**base, **sub} if isinstance(sub, dict) and _has_type_info(base) else sub,
                                          f"{path}/{key}/{i}", refs) for i, sub in enumerate(subs)])
        if "allOf" in s:
            subs = s["allOf"]
            if not isinstance(subs, list) or len(subs) != 1:
                raise SchemaError("allOf is supported with exactly one subschema", path + "/allOf")
            return self.convert(subs[0], path + "/allOf/0", refs)
        t = s.get("type")
        if isinstance(t, list):
            return _alt([self.convert({**s, "type": one}, path, refs) for one in t])
        if t is None:
            if "properties" in s or "additionalProperties" in s:
                t = "object"
            elif "items" in s or "prefixItems" in s:
                t = "array"
            else:
                unknown = set(s) - _ANNOTATIONS - {"$defs", "definitions"}
                if unknown:
                    raise SchemaError(f"unsupported keyword(s) {sorted(unknown)} without a type", path)
                return self.any_value(self.any_depth)
        handler = {"object": self.obj, "array": self.array, "string": self.string, "integer": self.integer,
                   "number": self.number, "boolean": lambda *_: BOOLEAN, "null": lambda *_: NULL}.get(t)
        if handler is None:
            raise SchemaError(f"unknown type {t!r}", path + "/type")
        return handler(s, path, refs)

    def ref(self, ref: Any, path: str, refs: tuple[str, ...]) -> Optional[str]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"only local $ref ('#/...') is supported, got {ref!r}", path + "/$ref")
        if refs.count(ref) >= self.max_depth:
            return None  # recursion unrolled deep enough: this branch is dropped
        node: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise SchemaError(f"$ref {ref!r} does not resolve", path + "/$ref")
            node = node[part]
        return self.convert(node, ref, refs + (ref,))

    def obj(self, s: dict, path: str, refs: tuple[str, ...]) -> Optional[str]:
        ws = self.ws
        props = s.get("properties", {}) or {}
        if not isinstance(props, dict):
            raise SchemaError("properties must be an object", path + "/properties")
        required = set(s.get("required", []) or [])
        missing = required - set(props)
        if missing and not props:
            raise SchemaError(f"required properties {sorted(missing)} have no schema", path + "/required")
        if not props:
            extra = s.get("additionalProperties", True)
            if extra is False:
                return r"\{" + ws + r"\}"
            value = self.convert(extra, path + "/additionalProperties", refs) if extra is not True else \
                self.any_value(self.any_depth - 1)
            if value is None:
                return r"\{" + ws + r"\}"
            item = f"{STRING}{ws}:{ws}{value}"
            return rf"\{{{ws}({item}({ws},{ws}{item})*)?{ws}\}}"
        items: list[tuple[str, bool]] = []
        for name, sub in props.items():
            value = self.convert(sub, f"{path}/properties/{name}", refs)
            if value is None:
                if name in required:
                    return None
                continue
            items.append((_literal(name) + f"{ws}:{ws}" + value, name in required))
        sep = f"{ws},{ws}"
        # the first present property has no comma; after it, each one is ",p" (optional ones may be absent)
        alts = []
        for k, (first, _) in enumerate(items):
            if any(req for _, req in items[:k]):
                break
            rest = "".join(f"{sep}{p}" if req else f"({sep}{p})?" for p, req in items[k + 1:])
            alts.append(first + rest)
        body = "(" + "|".join(alts) + ")" if len(alts) > 1 else alts[0] if alts else ""
        if all(not req for _, req in items) and alts:
            body = f"({body})?"
        return rf"\{{{ws}{body}{ws}\}}"

    def array(self, s: dict, path: str, refs: tuple[str, ...]) -> Optional[str]:
        ws = self.ws
        lo = int(s.get("minItems", 0))
        hi = s.get("maxItems")
        if hi is not None and int(hi) < lo:
            raise SchemaError(f"maxItems {hi} < minItems {lo}", path)
        prefix = s.get("prefixItems")
        if prefix is not None:
            parts = [self.convert(p, f"{path}/prefixItems/{i}", refs) for i, p in enumerate(prefix)]
            if any(p is None for p in parts):
                return None
            return r"\[" + ws + f"{ws},{ws}".join(parts) + ws + r"\]"
        item = self.convert(s.get("items", True), path + "/items", refs)
        if item is None:
            return r"\[" + ws + r"\]" if lo == 0 else None
        if hi is not None and int(hi) == 0:
            return r"\[" + ws + r"\]"
        more_lo = max(lo - 1, 0)
        more = f"{{{more_lo},{'' if hi is None else int(hi) - 1}}}"
        body = f"{item}({ws},{ws}{item}){more}"
        if lo == 0:
            body = f"({body})?"
        return r"\[" + ws + body + ws + r"\]"

    def string(self, s: dict, path: str, refs: tuple[str, ...]) -> str:
        if "pattern" in s:
            pat = s["pattern"]
            if not isinstance(pat, str):
                raise SchemaError("pattern must be a string", path + "/pattern")
            pat = pat[1:] if pat.startswith("^") else pat
            pat = pat[:-1] if pat.endswith("$") and not pat.endswith("\\$") else pat
            return f'"({pat})"'
        fmt = s.get("format")
        if fmt in FORMATS:
            return FORMATS[fmt]
        lo = int(s.get("minLength", 0))
        hi = s.get("maxLength")
        if hi is not None and int(hi) < lo:
            raise SchemaError(f"maxLength {hi} < minLength {lo}", path)
        if lo == 0 and hi is None:
            return STRING
        return f'"{STRING_CHAR}{{{lo},{"" if hi is None else int(hi)}}}"'

    def integer(self, s: dict, path: str, refs: tuple[str, ...]) -> Optional[str]:
        lo, hi = _bounds(s, integer=True)
        if lo is None and hi is None:
            return INTEGER
        if lo is not None and hi is not None and lo > hi:
            return None
        return int_range_regex(lo, hi)

    def number(self, s: dict, path: str, refs: tuple[str, ...]) -> str:
        lo, hi = _bounds(s, integer=False)
        if hi is not None or (lo is not None and lo != 0):
            raise SchemaError("number bounds other than minimum 0 cannot be enforced (use an integer)", path)
        return NUMBER if lo is None else NUMBER[2:]  # minimum 0: no minus sign

    def any_value(self, depth: int) -> str:
        scalars = [STRING, NUMBER, BOOLEAN, NULL]
        if depth <= 0:
            return "(" + "|".join(scalars) + ")"
        inner, ws = self.any_value(depth - 1), self.ws
        arr = rf"\[{ws}({inner}({ws},{ws}{inner})*)?{ws}\]"
        obj = rf"\{{{ws}({STRING}{ws}:{ws}{inner}({ws},{ws}{STRING}{ws}:{ws}{inner})*)?{ws}\}}"
        return "(" + "|".join(scalars + [arr, obj]) + ")"


def _has_type_info(base: dict) -> bool:
    return any(k not in _ANNOTATIONS for k in base)


def _bounds(s: dict, integer: bool) -> tuple[Optional[float], Optional[float]]:
    lo = s.get("minimum")
    hi = s.get("maximum")
    if "exclusiveMinimum" in s:
        x = s["exclusiveMinimum"]
        lo = x + 1 if integer else x  # for numbers only the x >= 0 case is accepted later
    if "exclusiveMaximum" in s:
        x = s["exclusiveMaximum"]
        hi = x - 1 if integer else x
    if integer:
        import math
        lo = None if lo is None else int(math.ceil(lo))
        hi = None if hi is None else int(math.floor(hi))
    return lo, hi


def _digits_range(lo: str, hi: str) -> str:
    """Regex for the decimal strings of equal length n from lo to hi (lo <= hi, no leading-zero rules)."""
    if lo == hi:
        return lo
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + "(" + _digits_range(lo[1:], hi[1:]) + ")"
    n = len(lo) - 1
    parts = [lo[0] + "(" + _digits_range(lo[1:], "9" * n) + ")"]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}][0-9]{{{n}}}")
    parts.append(hi[0] + "(" + _digits_range("0" * n, hi[1:]) + ")")
    return "(" + "|".join(parts) + ")"


def _nonneg_range(lo: int, hi: Optional[int]) -> str:
    """Canonical decimal (no leading zeros) of lo..hi, hi None = unbounded."""
    parts = []
    n_lo = len(str(lo))
    top = len(str(hi)) if hi is not None else n_lo
    for n in range(n_lo, top + 1):
        a = max(lo, 10 ** (n - 1) if n > 1 else 0)
        b = min(hi, 10 ** n - 1) if hi is not None else 10 ** n - 1
        if a <= b:
            parts.append(_digits_range(str(a), str(b)))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{n_lo},}}")
    return "(" + "|".join(parts) + ")"


def int_range_regex(lo: Optional[int], hi: Optional[int]) -> str:
    """Regex of the canonical JSON integers in [lo, hi] (None = unbounded)."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(_nonneg_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        # negatives: -(1..|lo|), bounded above by hi when hi < 0
        nlo = 1 if hi is None or hi >= 0 else -hi
        nhi = None if lo is None else -lo
        parts.append("-" + _nonneg_range(nlo, nhi))
    return "(" + "|".join(parts) + ")"
