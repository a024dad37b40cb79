"""JSON schema → regex: random members of the regex's language validate under pydantic; bad schemas error."""
from __future__ import annotations

import enum
import json
import random
import re
from typing import Literal, Optional, Union

import pytest
from constrained_helpers import random_match
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from sglang.runtime.constrained import (ConstraintError, RegexSyntaxError, SchemaError,
                                        build_constraint_from_sampling_params, json_schema_to_regex, regex_to_dfa,
                                        response_format_to_constraint)
from sglang.runtime.constrained.json_schema import int_range_regex


class House(str, enum.Enum):
    gryffindor = "Gryffindor"
    slytherin = "Slytherin"


class Wand(BaseModel):
    wood: str = Field(max_length=12)
    core: str
    length: float


class Character(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    age: int = Field(ge=0, le=150)
    house: House
    wand: Wand
    tags: list[str] = Field(min_length=1, max_length=3)
    alive: bool
    nickname: Optional[str] = None
    kind: Literal["wizard", "witch"] = "wizard"
    score: Union[int, None] = None


class Node(BaseModel):  # recursive: nested $ref
    value: int
    children: list["Node"] = Field(default_factory=list, max_length=2)


class Point(BaseModel):
    x: float
    y: float = Field(ge=0)


def _samples(regex: str, n: int, seed: int = 0, soft_len: int = 60) -> list[str]:
    dfa = regex_to_dfa(regex)
    rng = random.Random(seed)
    return [random_match(dfa, rng, soft_len).decode() for _ in range(n)]


@pytest.mark.parametrize("model", [Character, Node, Point, Wand])
@pytest.mark.parametrize("whitespace", ["default", "compact", "pretty"])
def test_pydantic_models_validate_every_sample(model, whitespace) -> None:
    regex = json_schema_to_regex(model, whitespace=whitespace)
    for text in _samples(regex, 25):
        model.model_validate_json(text)  # raises on any invalid sample


def test_dict_and_json_string_give_the_same_regex() -> None:
    schema = Character.model_json_schema()
    assert json_schema_to_regex(schema) == json_schema_to_regex(json.dumps(schema)) == json_schema_to_regex(Character)


def test_optional_properties_and_commas() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                                                "c": {"type": "null"}}, "required": ["b"]}
    rx = json_schema_to_regex(schema, whitespace="compact")
    good = ['{"b":true}', '{"a":1,"b":false}', '{"b":true,"c":null}', '{"a":-5,"b":true,"c":null}']
    bad = ['{}', '{"a":1}', '{"a":1,,"b":true}', '{,"b":true}', '{"b":true,}', '{"c":null,"b":true}']
    for s in good:
        assert re.fullmatch(rx, s), s
    for s in bad:
        assert not re.fullmatch(rx, s), s
    all_optional = json_schema_to_regex({"type": "object", "properties": {"a": {"type": "integer"},
                                         "b": {"type": "integer"}}}, whitespace="compact")
    for s in ['{}', '{"a":1}', '{"b":2}', '{"a":1,"b":2}']:
        assert re.fullmatch(all_optional, s), s
    assert not re.fullmatch(all_optional, '{,"b":2}')


def test_strings_escapes_lengths_enum_const() -> None:
    rx = json_schema_to_regex({"type": "string", "minLength": 2, "maxLength": 3})
    assert re.fullmatch(rx, '"ab"') and re.fullmatch(rx, r'"a\"b"') and re.fullmatch(rx, r'"\u00e9x"')
    assert not re.fullmatch(rx, '"a"') and not re.fullmatch(rx, '"abcd"') and not re.fullmatch(rx, '"a"b"')
    assert not re.fullmatch(json_schema_to_regex({"type": "string"}), '"a\nb"')  # raw control char
    rx = json_schema_to_regex({"enum": ["a.b", 1, None, {"k": [1]}]})
    for v in ['"a.b"', "1", "null", '{"k":[1]}']:
        assert re.fullmatch(rx, v), v
    assert not re.fullmatch(rx, '"aXb"')
    assert re.fullmatch(json_schema_to_regex({"const": "x+y"}), '"x+y"')


def test_arrays_min_max_items() -> None:
    rx = json_schema_to_regex({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
                              whitespace="compact")
    assert not re.fullmatch(rx, "[1]") and re.fullmatch(rx, "[1,2]") and re.fullmatch(rx, "[1,2,3]")
    assert not re.fullmatch(rx, "[1,2,3,4]") and not re.fullmatch(rx, "[]")
    rx0 = json_schema_to_regex({"type": "array", "items": {"type": "string"}}, whitespace="compact")
    assert re.fullmatch(rx0, "[]") and re.fullmatch(rx0, '["a","b"]')


@pytest.mark.parametrize("lo,hi", [(0, 150), (-20, 7), (5, 5), (-300, -17), (None, 12), (-3, None), (10, 1000)])
def test_integer_ranges_exact(lo, hi) -> None:
    rx = int_range_regex(lo, hi)
    for v in range(-1100, 1101):
        inside = (lo is None or v >= lo) and (hi is None or v <= hi)
        assert bool(re.fullmatch(rx, str(v))) == inside, (lo, hi, v)
    assert not re.fullmatch(rx, "-0") and not re.fullmatch(rx, "007")


def test_any_value_and_type_lists() -> None:
    rx = json_schema_to_regex({}, whitespace="compact")
    for v in ['1', '"s"', 'null', '[1,{"a":true}]', '{"a":[1,2]}']:
        assert re.fullmatch(rx, v), v
    rx = json_schema_to_regex({"type": ["integer", "null"]})
    assert re.fullmatch(rx, "3") and re.fullmatch(rx, "null") and not re.fullmatch(rx, '"3"')
    ta = TypeAdapter(dict)
    for s in _samples(json_schema_to_regex({"type": "object"}), 20):
        ta.validate_json(s)


@pytest.mark.parametrize("schema,path", [
    ({"type": "strnig"}, "#/type"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "#/properties/a/$ref"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "#"),
    ('{"type": "object",', None),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "#"),  # no value is both
    ({"type": "string", "maxLength": 1, "minLength": 2}, "#"),
])
def test_bad_schema_errors_name_the_place(schema, path) -> None:
    with pytest.raises(ConstraintError) as ei:
        regex_to_dfa(json_schema_to_regex(schema))
    assert isinstance(ei.value, ValueError)
    if path is not None:
        assert isinstance(ei.value, SchemaError) and ei.value.path == path, str(ei.value)


def test_sampling_params_and_response_format_entry_points() -> None:
    spec = build_constraint_from_sampling_params({"json_schema": json.dumps(Point.model_json_schema())})
    assert spec is not None and spec.kind == "json_schema" and re.fullmatch(spec.regex, '{"x": 1.5, "y": 2}')
    assert build_constraint_from_sampling_params({"temperature": 0.5}) is None
    spec = build_constraint_from_sampling_params({"regex": r"\d+"})
    assert spec.regex == r"\d+"
    with pytest.raises(RegexSyntaxError) as ei:
        build_constraint_from_sampling_params({"regex": "(ab"})
    assert "sampling_params.regex" in str(ei.value) and ei.value.pos == 0
    with pytest.raises(ConstraintError):
        build_constraint_from_sampling_params({"regex": "a", "json_schema": "{}"})
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": Point.model_json_schema()}}
    spec = response_format_to_constraint(rf)
    assert re.fullmatch(spec.regex, '{"x": -1, "y": 0.5}')
    assert response_format_to_constraint({"type": "text"}) is None
    obj = response_format_to_constraint({"type": "json_object"})
    assert re.fullmatch(obj.regex, '{"a": [1, 2]}') and not re.fullmatch(obj.regex, "[1]")
    with pytest.raises(ConstraintError):
        response_format_to_constraint({"type": "xml"})
    with pytest.raises(SchemaError):
        response_format_to_constraint({"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}})


def test_generated_json_rejects_invalid_documents() -> None:
    rx = json_schema_to_regex(Character)
    doc = Character(name="Harry", age=11, house=House.gryffindor, wand=Wand(wood="holly", core="phoenix", length=11.0),
                    tags=["seeker"], alive=True).model_dump_json()
    doc = doc.replace(',"nickname":null', "").replace(',"kind":"wizard"', "").replace(',"score":null', "")
    assert re.fullmatch(rx, doc), doc
    assert not re.fullmatch(rx, doc.replace('"age":11', '"age":151'))
    assert not re.fullmatch(rx, doc.replace('"tags":["seeker"]', '"tags":[]'))
    with pytest.raises(ValidationError):
        Character.model_validate_json(doc.replace('"age":11', '"age":151'))


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_LEAVES = st.one_of(
    st.just({"type": "integer"}), st.just({"type": "number"}), st.just({"type": "boolean"}), st.just({"type": "null"}),
    st.integers(-50, 50).flatmap(lambda lo: st.integers(lo, lo + 120).map(
        lambda hi: {"type": "integer", "minimum": lo, "maximum": hi})),
    st.integers(0, 6).map(lambda n: {"type": "string", "maxLength": n}),
    st.just({"type": "string", "format": "date"}),
    st.lists(st.one_of(st.integers(-3, 3), st.text("ab\"\\é", max_size=3), st.none()), min_size=1, max_size=3,
             unique=True).map(lambda v: {"enum": v}),
)


def _schemas():
    return st.recursive(_LEAVES, lambda inner: st.one_of(
        st.dictionaries(st.text("abkey_", min_size=1, max_size=4), inner, min_size=1, max_size=3).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
                lambda req: {"type": "object", "properties": props, "required": req})),
        st.tuples(inner, st.integers(0, 2), st.integers(0, 2)).map(
            lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}),
        st.lists(inner, min_size=1, max_size=3).map(lambda subs: {"anyOf": subs}),
    ), max_leaves=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schemas(), st.sampled_from(["default", "compact", "pretty"]))
def test_fuzz_schema_samples_validate(schema, whitespace) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    regex = json_schema_to_regex(schema, whitespace=whitespace)
    for text in _samples(regex, 6, soft_len=40):
        jsonschema.validate(json.loads(text), schema)
