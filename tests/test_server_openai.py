"""HTTP server, OpenAI-compatible API, driven by the official `openai` client (sync and streaming) against
a real uvicorn server over the tiny dummy-weight Llama engine.
"""
from __future__ import annotations

import json

import httpx
import pytest

openai = pytest.importorskip("openai")  # optional client: collecting the suite must not need it
from server_helpers import wait_idle

from sglang.runtime.server.launch import BackgroundServer


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=32768,
                 served_model_name="tiny-llama", random_seed=3)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


MODEL = "tiny-llama"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]


def test_models_list(oai):
    models = oai.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert oai.models.retrieve(MODEL).id == MODEL


def test_completion_sync_matches_native(oai, server):
    c = oai.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0,
                               extra_body={"ignore_eos": True})
    native = httpx.post(server.url + "/generate", json={
        "text": "Once upon a time", "sampling_params": {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}}).json()
    assert c.object == "text_completion" and c.model == MODEL
    assert c.choices[0].text == native["text"]
    assert c.choices[0].finish_reason == "length"
    assert c.usage.prompt_tokens == native["meta_info"]["prompt_tokens"]
    assert c.usage.completion_tokens == 6 and c.usage.total_tokens == c.usage.prompt_tokens + 6


def test_completion_batch_n_echo_logprobs(oai):
    c = oai.completions.create(model=MODEL, prompt=["alpha beta", "gamma"], max_tokens=3, n=2, temperature=0.8,
                               seed=11, logprobs=2, echo=True, extra_body={"ignore_eos": True})
    assert [ch.index for ch in c.choices] == [0, 1, 2, 3]
    assert c.choices[0].text.startswith("alpha beta") and c.choices[2].text.startswith("gamma")
    lp = c.choices[0].logprobs
    # echo: prompt tokens first (the very first has no logprob), then the 3 generated ones
    assert lp.token_logprobs[0] is None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
    assert all(len(t) <= 2 for t in lp.top_logprobs[1:]) and lp.text_offset[0] == 0
    assert "".join(lp.tokens) == c.choices[0].text
    assert c.usage.completion_tokens == 12
    # seeds make sampling reproducible
    again = oai.completions.create(model=MODEL, prompt=["alpha beta", "gamma"], max_tokens=3, n=2, temperature=0.8,
                                   seed=11, extra_body={"ignore_eos": True})
    assert [ch.text for ch in again.choices] == [ch.text[len(p):] for ch, p in
                                                 zip(c.choices, ["alpha beta"] * 2 + ["gamma"] * 2)]


def test_completion_token_id_prompt_and_stop(oai, engine):
    ids = engine.tokenizer.encode("The weather today")
    base = oai.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0,
                                  extra_body={"ignore_eos": True})
    text = base.choices[0].text
    assert base.usage.prompt_tokens == len(ids)
    stop = text.strip()[-3:]
    assert len(stop) == 3
    stopped = oai.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0, stop=[stop],
                                     extra_body={"ignore_eos": True})
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[:text.index(stop)]


def test_completion_stream_with_usage(oai):
    chunks = list(oai.completions.create(model=MODEL, prompt="Count:", max_tokens=5, temperature=0, stream=True,
                                         stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    full = oai.completions.create(model=MODEL, prompt="Count:", max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert text == full.choices[0].text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_chat_uses_the_tokenizers_template(oai, engine):
    c = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0,
                                    extra_body={"ignore_eos": True})
    expected_prompt = engine.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert c.usage.prompt_tokens == len(engine.tokenizer.encode(expected_prompt))
    assert c.object == "chat.completion" and c.choices[0].message.role == "assistant"
    native = engine.generate(text=expected_prompt, sampling_params={"max_new_tokens": 4, "temperature": 0,
                                                                    "ignore_eos": True})
    assert c.choices[0].message.content == native["text"]


def test_chat_content_parts(oai):
    parts = [{"role": "system", "content": "You are terse."},
             {"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi."}]}]
    a = oai.chat.completions.create(model=MODEL, messages=parts, max_tokens=1)
    b = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    assert "image_url" in info.value.body["message"]


def test_chat_stream_n2_logprobs_usage(oai):
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0.7, n=2,
                                         seed=5, stream=True, logprobs=True, top_logprobs=2,
                                         stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    content = {0: "", 1: ""}
    roles, finish, lp_tokens = [], {}, {0: 0, 1: 0}
    usage = None
    for ch in stream:
        if ch.usage is not None:
            usage = ch.usage
        for choice in ch.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            content[choice.index] += choice.delta.content or ""
            if choice.logprobs and choice.logprobs.content:
                lp_tokens[choice.index] += len(choice.logprobs.content)
                assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert roles == ["assistant", "assistant"]
    assert finish == {0: "length", 1: "length"} and lp_tokens == {0: 4, 1: 4}
    assert usage.completion_tokens == 8
    sync = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0.7, n=2, seed=5,
                                       extra_body={"ignore_eos": True})
    assert [c.message.content for c in sync.choices] == [content[0], content[1]]


def test_response_format_json_schema_and_logit_bias(oai, engine):
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
              "required": ["color", "ok"]}
    c = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=60, temperature=0,
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "answer", "schema": schema}})
    value = json.loads(c.choices[0].message.content)
    assert value["color"] in ("red", "green") and isinstance(value["ok"], bool)
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, response_format={
            "type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "wat"}}})
    assert "response_format.json_schema.schema" in info.value.body["message"]
    # a +100 bias makes one token certain
    token = engine.tokenizer.encode(" banana")[0]
    biased = oai.completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=0.9,
                                    logit_bias={str(token): 100}, extra_body={"ignore_eos": True})
    assert biased.choices[0].text == engine.tokenizer.decode([token]) * 3


def test_response_format_ebnf_recursive_grammar_runs_exactly(oai, engine):
    """A recursive grammar in response_format reaches the exact CFG engine: nesting is not cut at a fixed depth."""
    from sglang.runtime.constrained.cfg import compile_cfg, matches

    grammar = 'start: list\nlist: "[" (item ("," item)*)? "]"\nitem: list | DIGIT\nDIGIT: /[0-9]/\n'
    g = compile_cfg(grammar)
    c = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0.8, seed=3,
                                    response_format={"type": "ebnf", "ebnf": grammar})
    text, reason = c.choices[0].message.content, c.choices[0].finish_reason
    alive, complete = matches(g, text.encode())
    assert alive, text  # never a dead prefix
    assert complete == (reason == "stop"), (text, reason)
    # push the model to keep opening lists: the exact engine allows any depth (a regex path would stop at a few)
    bracket = engine.tokenizer.convert_tokens_to_ids("[")
    deep = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0,
                                       logit_bias={str(bracket): 100},
                                       response_format={"type": "ebnf", "ebnf": grammar})
    assert deep.choices[0].message.content == "[" * 12
    assert matches(g, b"[" * 12) == (True, False)


def test_chat_template_override_from_jinja_file(engine, tmp_path):
    template = tmp_path / "tiny.jinja"
    template.write_text("{% for m in messages %}<<{{ m.role }}>> {{ m.content }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<<assistant>>{% endif %}")
    args = engine.get_server_args().replace(chat_template=str(template))
    with BackgroundServer(engine, args) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        c = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    expected = "<<system>> You are terse.\n<<user>> Say hi.\n<<assistant>>"
    assert c.usage.prompt_tokens == len(engine.tokenizer.encode(expected))


def test_unknown_model_is_404(oai):
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="gpt-17", messages=MESSAGES, max_tokens=2)
    assert "gpt-17" in info.value.body["message"] and info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("kwargs, needle", [
    ({"temperature": "hot"}, "temperature"),
    ({"n": 0}, "n must be >= 1"),
    ({"max_tokens": 5000}, "context length"),
    ({"top_logprobs": 3}, "top_logprobs requires logprobs"),
    ({"extra_body": {"frobnicate": True}}, "frobnicate"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
])
def test_bad_requests_are_400_in_openai_shape(oai, kwargs, needle):
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=MESSAGES, **{"max_tokens": 2, **kwargs})
    assert needle in info.value.body["message"]
    assert info.value.body["type"] == "invalid_request_error"
    ok = oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_oversized_request_rejected(oai, engine):
    limit = engine.get_server_args().max_batch_size_per_request
    with pytest.raises(openai.BadRequestError) as info:
        oai.completions.create(model=MODEL, prompt=["x"] * (limit + 1), max_tokens=1)
    assert "max_batch_size_per_request" in info.value.body["message"]


def test_stream_disconnect_aborts_choices(server, engine):
    aborted = engine.stats()["aborted"]
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1500, "n": 2, "stream": True, "ignore_eos": True}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data:")
                if seen == 6:
                    break
    wait_idle(engine, timeout=20.0)
    assert engine.stats()["aborted"] == aborted + 2
