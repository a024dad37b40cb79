"""SamplingParams: SGLang names/defaults, from_dict key and type errors, verify() range table."""
from __future__ import annotations

import re

import pytest

from sglang.runtime.sampling import SamplingParams
from sglang.runtime.sampling.sampling_params import TYPED_REGEX


def test_defaults_match_sglang():
    p = SamplingParams()
    assert p.max_new_tokens == 128 and p.min_new_tokens == 0
    assert p.temperature == 1.0 and p.top_p == 1.0 and p.top_k == -1 and p.min_p == 0.0
    assert p.frequency_penalty == 0.0 and p.presence_penalty == 0.0 and p.repetition_penalty == 1.0
    assert p.stop == () and p.stop_token_ids == () and p.n == 1 and p.seed is None
    assert not p.ignore_eos and p.skip_special_tokens and p.spaces_between_special_tokens and not p.no_stop_trim
    assert p.constraint is None
    p.verify(vocab_size=100, context_len=1000, prompt_len=10)


def test_from_dict_normalizes_and_round_trips():
    p = SamplingParams.from_dict(
        {"stop": "\n", "stop_token_ids": [3, 4], "temperature": 0, "max_new_tokens": 16.0, "top_p": None}
    )
    assert p.stop == ("\n",) and p.stop_token_ids == (3, 4)
    assert isinstance(p.temperature, float) and p.temperature == 0.0 and p.is_greedy
    assert p.max_new_tokens == 16 and isinstance(p.max_new_tokens, int)
    assert p.top_p == 1.0  # None = default
    assert SamplingParams.from_dict(p.to_dict()) == p
    assert SamplingParams.from_dict(None) == SamplingParams()
    assert SamplingParams.from_dict({"grammar": "root ::= 'a'"}).constraint == ("ebnf", "root ::= 'a'")
    assert SamplingParams.from_dict({"json_schema": {"type": "object"}}).json_schema == '{"type": "object"}'


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ValueError, match=r"'temprature'.*did you mean 'temperature'"):
        SamplingParams.from_dict({"temprature": 0.5})
    with pytest.raises(ValueError, match="'bogus_knob'"):
        SamplingParams.from_dict({"bogus_knob": 1})
    with pytest.raises(ValueError, match="must be a dict"):
        SamplingParams.from_dict([("temperature", 1.0)])


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", "hot"),
        ("top_p", [0.5]),
        ("top_k", 2.5),
        ("max_new_tokens", "10"),
        ("max_new_tokens", True),
        ("n", 1.5),
        ("seed", "42"),
        ("ignore_eos", 1),
        ("stop", 5),
        ("stop", ["a", 3]),
        ("stop_token_ids", ["a"]),
        ("regex", 12),
        ("logit_bias", {"x": 1.0}),
        ("logit_bias", {"5": "a"}),
        ("logit_bias", [1, 2]),
        ("temperature", float("nan")),
    ],
)
def test_wrong_types_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams.from_dict({field: value})


def test_only_one_constraint():
    with pytest.raises(ValueError, match="regex.*json_schema"):
        SamplingParams.from_dict({"regex": "a+", "json_schema": "{}"})
    with pytest.raises(ValueError, match="only one"):
        SamplingParams(regex="a", ebnf="root ::= 'a'")


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", 0),
        ("top_k", -2),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("frequency_penalty", 2.5),
        ("frequency_penalty", -2.1),
        ("presence_penalty", 3.0),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", -1.0),
        ("max_new_tokens", -1),
        ("min_new_tokens", -1),
        ("n", 0),
        ("stop_token_ids", [100]),
        ("stop_token_ids", [-1]),
        ("stop", [""]),
        ("logit_bias", {"5": 101}),
        ("logit_bias", {"100": 1}),
    ],
)
def test_verify_table(field, value):
    p = SamplingParams.from_dict({field: value})
    with pytest.raises(ValueError, match=field) as exc:
        p.verify(vocab_size=100)
    if isinstance(value, dict):  # the offending entry: its key or its value
        (k, v), = value.items()
        assert k in str(exc.value) and (str(v) in str(exc.value) or "vocabulary" in str(exc.value))
    else:
        assert str(value[0] if isinstance(value, list) else value) in str(exc.value)


def test_verify_min_gt_max_and_context():
    with pytest.raises(ValueError, match="min_new_tokens.*max_new_tokens"):
        SamplingParams(min_new_tokens=10, max_new_tokens=5).verify(100)
    with pytest.raises(ValueError, match="max_new_tokens=100.*90.*128"):
        SamplingParams(max_new_tokens=100).verify(100, context_len=128, prompt_len=90)
    with pytest.raises(ValueError, match="context length"):
        SamplingParams(max_new_tokens=0).verify(100, context_len=128, prompt_len=128)
    SamplingParams(max_new_tokens=38).verify(100, context_len=128, prompt_len=90)


def test_frozen():
    p = SamplingParams()
    with pytest.raises(Exception):
        p.temperature = 0.5  # type: ignore[misc]
    assert p.replace(temperature=0.5).temperature == 0.5


def test_dtype_int_becomes_integer_regex():
    p = SamplingParams.from_dict({"dtype": "int"})
    # the frontend's gen_int regex (one table, one constraint-cache key)
    assert p.constraint == ("regex", TYPED_REGEX["int"]) and re.fullmatch(p.regex, "-42") and not re.fullmatch(p.regex, "4.2")
    assert SamplingParams.from_dict(p.to_dict()) == p
    assert SamplingParams.from_dict({"dtype": "int", "regex": "[0-9]"}).regex == "[0-9]"
    assert SamplingParams.from_dict({"dtype": "str"}).constraint is None
    with pytest.raises(ValueError, match="dtype"):
        SamplingParams.from_dict({"dtype": "float"})


def test_logit_bias_normalized():
    p = SamplingParams.from_dict({"logit_bias": {"7": 2, 3: -1.5}})
    assert p.logit_bias == ((3, -1.5), (7, 2.0))
    assert SamplingParams.from_dict(p.to_dict()) == p
    assert SamplingParams.from_dict({"logit_bias": None}).logit_bias == ()
