"""Bad-input fuzzing of sampling params: any JSON-ish value for any field either builds valid params
or raises ValueError naming the field; every params object that passes verify() samples cleanly."""
from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sglang.runtime.sampling import Sampler, SamplingBatchInfo, SamplingParams, make_generator
from sglang.runtime.sampling.sampling_params import FIELD_NAMES

V = 64

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from([0, 1, -1, 0.5, 1.5, 2.5, -2.5, 63, 64, 200, 1e-9]),
)
json_value = st.one_of(
    json_scalar,
    st.lists(json_scalar, max_size=3),
    st.dictionaries(st.sampled_from(["1", "5", "x", "63", "64", "-1"]), json_scalar, max_size=2),
)
FIELDS = sorted(FIELD_NAMES | {"grammar"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=4))
def test_any_value_is_valid_or_a_named_value_error(d):
    try:
        p = SamplingParams.from_dict(d)
        p.verify(vocab_size=V, context_len=512, prompt_len=10)
    except ValueError as e:
        msg = str(e)
        assert any(k in msg for k in d) or "grammar" in d and "ebnf" in msg, (d, msg)
        return
    # valid: it must sample without error, greedy or not, alone and next to a default row
    ps = [p, SamplingParams()]
    logits = torch.randn(2, V, generator=torch.Generator().manual_seed(0))
    info = SamplingBatchInfo.build(ps, [[1, 2, 3], []], [make_generator(p.seed), None], V, "cpu",
                                   prompt_ids=[[4, 5], [6]], eos_token_ids=[0])
    ids, lps = Sampler(seed=0).sample(logits, info)
    assert 0 <= ids.min() and ids.max() < V
    assert all(math.isfinite(x) for x in lps.tolist())
