"""JSON-schema coverage: every feature is checked on both engines (one regex, and the CFG) by what they
accept and reject, and samples of their languages validate under the `jsonschema` validator."""
from __future__ import annotations

import datetime
import ipaddress
import json
import random
import re
import uuid
import warnings

import numpy as np
import pytest
from constrained_helpers import random_match

from sglang.runtime.constrained import ConstraintSpec, SchemaError, build_constraint_from_sampling_params, regex_to_dfa
from sglang.runtime.constrained.cfg import matches
from sglang.runtime.constrained.errors import SchemaWarning
from sglang.runtime.constrained.json_lexical import json_string_regex, number_range_regex
from sglang.runtime.constrained.json_schema import json_schema_info, json_schema_to_regex, schema_grammar
from sglang.runtime.constrained.schema_ir import terminal_dfa

jsonschema = pytest.importorskip("jsonschema")


def accepts(schema, text: str, whitespace: str = "compact") -> bool:
    """Whether the schema's CFG accepts `text`; when the schema is not recursive its regex must agree."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaWarning)
        g = schema_grammar(schema, whitespace)
        by_cfg = matches(g.cfg(), text.encode())[1]
        if not g.recursive:
            rx = g.regex()
            by_rx = rx is not None and re.fullmatch(rx, text) is not None
            assert by_rx == by_cfg, (schema, text, by_rx, by_cfg)
    return by_cfg


def samples(schema, n: int = 20, seed: int = 0, whitespace: str = "default") -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemaWarning)
        dfa = regex_to_dfa(json_schema_to_regex(schema, whitespace=whitespace))
    rng = random.Random(seed)
    return [random_match(dfa, rng, 40).decode() for _ in range(n)]


def test_boolean_subschemas() -> None:
    schema = {"type": "object", "properties": {"a": True, "b": False, "c": {"type": "integer"}}}
    assert accepts(schema, '{"a":[1,{"x":null}]}') and accepts(schema, '{"c":3}') and accepts(schema, "{}")
    assert not accepts(schema, '{"b":1}')
    assert accepts(True, '"x"') and accepts(True, "[1,2]")
    with pytest.raises(SchemaError):
        json_schema_to_regex(False)
    items_false = {"type": "array", "items": False}
    assert accepts(items_false, "[]") and not accepts(items_false, "[1]")
    required_false = {"type": "object", "properties": {"b": False}, "required": ["b"]}
    with pytest.raises(SchemaError):
        json_schema_to_regex(required_false)


def test_nested_any_of_one_of() -> None:
    schema = {"anyOf": [{"oneOf": [{"type": "integer"}, {"anyOf": [{"type": "null"}, {"const": "x"}]}]},
                        {"type": "array", "items": {"oneOf": [{"type": "boolean"}, {"type": "string", "maxLength": 1}]}}]}
    for ok in ["3", "null", '"x"', "[true,\"a\"]", "[]"]:
        assert accepts(schema, ok), ok
    for bad in ['"y"', "[1]", '["ab"]', "1.5"]:
        assert not accepts(schema, bad), bad


def test_all_of_merges_members() -> None:
    schema = {"$defs": {"Named": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
              "allOf": [{"$ref": "#/$defs/Named"},
                        {"properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]},
                        {"properties": {"age": {"maximum": 150}}}]}
    assert accepts(schema, '{"name":"a","age":3}')
    assert not accepts(schema, '{"name":"a"}') and not accepts(schema, '{"name":"a","age":151}')
    distributed = {"allOf": [{"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]},
                             {"anyOf": [{"properties": {"k": {"minimum": 10}}}, {"properties": {"k": {"maximum": -10}}}]}]}
    assert accepts(distributed, '{"k":12}') and accepts(distributed, '{"k":-11}')
    assert not accepts(distributed, '{"k":0}')
    closed = {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
                        {"properties": {"b": {"type": "integer"}}}]}
    assert accepts(closed, '{"a":1}') and not accepts(closed, '{"a":1,"b":2}')
    with pytest.raises(SchemaError):
        json_schema_to_regex({"allOf": [{"enum": [1, 2]}, {"enum": [3]}]})


def test_additional_and_pattern_properties() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}},
              "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
              "additionalProperties": False}
    assert accepts(schema, '{"id":1,"x-foo":"v"}') and accepts(schema, '{"x-a":"v","x-b":"w"}')
    assert not accepts(schema, '{"id":1,"other":2}') and not accepts(schema, '{"x-foo":1}')
    open_schema = {"type": "object", "properties": {"id": {"type": "integer"}},
                   "additionalProperties": {"type": "boolean"}}
    assert accepts(open_schema, '{"id":1,"flag":true}') and accepts(open_schema, '{"a":false,"b":true}')
    assert not accepts(open_schema, '{"flag":1}')
    assert not accepts(open_schema, '{"id":1,"id":true}')  # a listed name is never an additional key
    many = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(20)},
            "additionalProperties": {"type": "null"}}
    assert accepts(many, '{"p3":1,"q":null}') and not accepts(many, '{"p3":null}')
    assert accepts(many, '{"p":null,"p200":null}') and not accepts(many, '{"p19":null}')


def test_remote_ref_and_unenforced_keywords_warn() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.com/other.json#/x"},
                                               "n": {"type": "integer", "multipleOf": 3},
                                               "u": {"type": "array", "uniqueItems": True}},
              "required": ["a"]}
    with pytest.warns(SchemaWarning) as rec:
        info = json_schema_info(schema)
        build_constraint_from_sampling_params({"json_schema": json.dumps(schema)})
    text = " ".join(str(w.message) for w in rec)
    assert "remote $ref" in text and "multipleOf" in text and "uniqueItems" in text
    assert info["warnings"]
    assert accepts(schema, '{"a":{"any":[1]},"n":4}')  # remote ref = any value; multipleOf ignored


def test_enum_and_const_of_any_type() -> None:
    schema = {"enum": [{"a": [1, "x"]}, [None, True], 1.5, "s", None]}
    for ok in ['{"a":[1,"x"]}', "[null,true]", "1.5", '"s"', "null"]:
        assert accepts(schema, ok), ok
    assert not accepts(schema, '{"a":[1]}') and not accepts(schema, "1")
    assert accepts({"const": {"k": "v"}}, '{"k":"v"}')
    typed = {"type": "string", "enum": ["a", 1, "b"]}  # enum values of another type cannot be produced
    assert accepts(typed, '"a"') and not accepts(typed, "1")


@pytest.mark.parametrize("lo,lo_x,hi,hi_x", [(0, False, 1, False), (-2.5, False, 3.25, True), (1.5, True, None, False),
                                             (None, False, -0.5, False), (-3, True, -1, True), (0, True, 0.5, False)])
def test_number_ranges_are_sound(lo, lo_x, hi, hi_x) -> None:
    rx = number_range_regex(lo, lo_x, hi, hi_x)
    seen_inside = 0
    for k in range(-500, 501):
        for text in (str(k), f"{k / 100:.2f}", f"{k / 10:.1f}", f"{k / 1000:.3f}", "-" + f"{abs(k) / 100:.2f}"):
            if rx is not None and re.fullmatch(rx, text):
                v = float(text)
                assert (lo is None or (v > lo if lo_x else v >= lo)) and (hi is None or (v < hi if hi_x else v <= hi)), \
                    (text, lo, hi)
                seen_inside += 1
    assert seen_inside > 0
    schema = {"type": "number", "minimum": -1, "exclusiveMaximum": 2}
    assert accepts(schema, "1.99") and accepts(schema, "-1") and not accepts(schema, "2") and not accepts(schema, "-1.5")


def test_formats_produce_parseable_values() -> None:
    checks = {"date-time": lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")),
              "date": datetime.date.fromisoformat, "uuid": uuid.UUID, "ipv4": ipaddress.IPv4Address,
              "ipv6": ipaddress.IPv6Address,
              "email": lambda s: re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-zA-Z]{2,}", s) or (_ for _ in ()).throw(ValueError(s)),
              "uri": lambda s: re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", s) or (_ for _ in ()).throw(ValueError(s))}
    for fmt, check in checks.items():
        for text in samples({"type": "string", "format": fmt}, n=15):
            check(json.loads(text))


def test_array_items_prefix_and_bounds() -> None:
    schema = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "null"},
              "minItems": 1, "maxItems": 4}
    for ok in ["[1]", '[1,"a"]', '[1,"a",null,null]']:
        assert accepts(schema, ok), ok
    for bad in ["[]", '["a"]', '[1,"a",null,null,null]', '[1,"a",1]']:
        assert not accepts(schema, bad), bad
    draft4 = {"type": "array", "items": [{"type": "boolean"}], "additionalItems": False}
    assert accepts(draft4, "[true]") and not accepts(draft4, "[true,false]")


def test_recursive_refs_run_on_the_cfg_without_depth_limit() -> None:
    tree = {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                                  "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                               "required": ["v"]}},
            "$ref": "#/$defs/node"}
    info = json_schema_info(tree)
    assert info["recursive"] and info["regex"] is None and info["grammar"]
    deep = '{"v":0}'
    for i in range(1, 9):  # nesting 8 levels deep: the old regex unrolled 3
        deep = f'{{"v":{i},"kids":[{deep}]}}'
    assert accepts(tree, deep)
    assert not accepts(tree, deep.replace('"v":0', '"v":"0"'))
    spec = build_constraint_from_sampling_params({"json_schema": json.dumps(tree)})
    assert isinstance(spec, ConstraintSpec) and spec.grammar is not None


def test_patterns_are_translated_into_json_text() -> None:
    """A pattern's characters that JSON must escape never appear raw; every sample's decoded string fully
    matches the pattern."""
    for pattern in [r'^[a-z"\\]{2,4}$', r"^\d{3}-[A-Z]+$", r"^(foo|ba[rz])\.x?$", r"^[^a-c]+$", r"^\S+@\w+$"]:
        schema = {"type": "string", "pattern": pattern}
        for text in samples(schema, n=15):
            value = json.loads(text)
            assert re.fullmatch(pattern.strip("^$"), value), (pattern, text)
    with pytest.raises(Exception):
        json_string_regex("(?=x)a")


def _co_reachable_everywhere(dfa) -> bool:
    """Every state but the dead one reaches acceptance (so no byte the automaton allows leads nowhere)."""
    good = set(np.flatnonzero(dfa.accepting).tolist())
    changed = True
    while changed:
        changed = False
        for s in range(1, dfa.num_states):
            if s not in good and any(int(t) in good for t in set(dfa.trans[s].tolist())):
                good.add(s)
                changed = True
    return good >= set(range(1, dfa.num_states))


@pytest.mark.parametrize("lo,hi", [(0, 12), (5, 40), (32, 32), (12, None)])
def test_directly_built_automata_never_dead_end(lo, hi) -> None:
    """Length-bounded strings and "any name but these" keys get automata built without the regex
    compiler; like the compiler's, they have no state from which acceptance is out of reach."""
    node = schema_grammar({"type": "string", "minLength": lo, **({"maxLength": hi} if hi else {})}).start
    assert node.solid and _co_reachable_everywhere(terminal_dfa(node.rx))
    names = [f"name{i}" for i in range(12)]
    key = schema_grammar({"type": "object", "properties": {n: {"type": "null"} for n in names},
                          "additionalProperties": {"type": "null"}}).cfg()
    assert all(_co_reachable_everywhere(d) for d in key.dfas)


@pytest.mark.parametrize("seed", range(3))
def test_real_world_like_schema_samples_validate(seed) -> None:
    schema = {"type": "object", "required": ["apiVersion", "kind", "spec"],
              "properties": {"apiVersion": {"const": "v1"}, "kind": {"enum": ["Pod", "Service"]},
                             "metadata": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 12}},
                             "spec": {"oneOf": [{"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 9}},
                                                 "required": ["replicas"], "additionalProperties": False},
                                                {"type": "null"}]},
                             "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}},
              "additionalProperties": False}
    for text in samples(schema, n=20, seed=seed, whitespace="pretty"):
        jsonschema.validate(json.loads(text), schema)


def test_if_then_discriminators_become_branches() -> None:
    """`allOf` of if/then on one property's constants (GitHub issue forms, Semgrep): one branch per
    constant, so `then`'s required properties are enforced, with no warning."""
    schema = {"type": "object", "properties": {"type": {"enum": ["md", "input", "other"]}, "value": {"type": "string"},
                                               "label": {"type": "string"}},
              "required": ["type"], "additionalProperties": False,
              "allOf": [{"if": {"properties": {"type": {"const": "md"}}}, "then": {"required": ["value"]}},
                        {"if": {"properties": {"type": {"const": "input"}}}, "then": {"required": ["label"]},
                         "else": {"properties": {"label": False}}}]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaWarning)
        assert json_schema_info(schema)["warnings"] == []
    assert accepts(schema, '{"type":"md","value":"x"}')
    assert not accepts(schema, '{"type":"md"}')  # then: value required
    assert accepts(schema, '{"type":"input","label":"x"}')
    assert not accepts(schema, '{"type":"input","value":"x"}')
    assert not accepts(schema, '{"type":"md","value":"x","label":"y"}')  # the input if's else: no label
    assert accepts(schema, '{"type":"other"}')  # the enum's other values take every else
    for text in samples(schema, n=30, seed=2):
        jsonschema.validate(json.loads(text), schema)


def test_plain_if_then_is_enforced_as_if_and_then() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
              "if": {"required": ["a"]}, "then": {"required": ["b"]}}
    assert not [w for w in json_schema_info(schema)["warnings"] if "'if'" in w]
    assert accepts(schema, '{"a":1,"b":"x"}')
    assert not accepts(schema, '{"a":1}')


def test_min_max_properties_of_a_map() -> None:
    schema = {"type": "object", "minProperties": 1, "maxProperties": 2,
              "additionalProperties": {"type": "integer"}}
    assert not [w for w in json_schema_info(schema)["warnings"] if "Properties" in w]
    assert not accepts(schema, '{}')
    assert accepts(schema, '{"a":1}') and accepts(schema, '{"a":1,"b":2}')
    assert not accepts(schema, '{"a":1,"b":2,"c":3}')
    for text in samples(schema, n=20, seed=1):
        jsonschema.validate(json.loads(text), schema)


def test_if_then_else_with_an_exact_if_takes_the_then_branch() -> None:
    """An `if` the grammar enforces exactly is made true (so `else` never applies); one with an ignored
    keyword inside cannot be, and stays ignored with a warning."""
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"k": {"const": 1}}},
                                               "b": {"type": "string"}, "c": {"type": "string"}},
              "required": ["a"], "if": {"properties": {"a": {"properties": {"k": {"const": 1}}}}},
              "then": {"required": ["b"]}, "else": {"required": ["c"]}}
    assert not [w for w in json_schema_info(schema)["warnings"] if "'if'" in w]
    assert accepts(schema, '{"a":{"k":1},"b":"x"}')
    assert not accepts(schema, '{"a":{"k":1}}')
    vague = {**schema, "if": {"properties": {"a": {"multipleOf": 2}}}}
    assert [w for w in json_schema_info(vague)["warnings"] if "'if'" in w]
