"""Chat templates (model jinja, named fallbacks, overrides) and the OpenAI backend's request shaping
and its clear errors for what the API cannot do (through a mocked HTTP transport)."""
from __future__ import annotations

import json

import httpx
import pytest

import sglang as sgl
from sglang.runtime.chat_template import NAMED, from_jinja, get_named, load_chat_template, load_chat_template_from_path

MSGS = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"}, {"role": "user", "content": [{"type": "text", "text": "more"}]}]


def test_smollm2_template_matches_the_tokenizer_and_gives_chatml_roles(default_model_path):
    from sglang.runtime.tokenizer import get_tokenizer

    tok = get_tokenizer(default_model_path)
    tmpl = load_chat_template(tok)
    assert tmpl.role_begin("user") == "<|im_start|>user\n" and tmpl.role_end("assistant") == "<|im_end|>\n"
    assert tmpl.stop_strs == ("<|im_end|>",)
    plain = [dict(m, content=m["content"] if isinstance(m["content"], str) else "more") for m in MSGS]
    for msgs in (plain, plain[1:2]):  # with and without a system message (the jinja adds a default one)
        assert tmpl.render(msgs) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert load_chat_template_from_path(default_model_path).render(plain) == tmpl.render(plain)


def test_named_templates_and_overrides(tmp_path):
    chatml = get_named("chatml")
    assert chatml.render(MSGS[:2]) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert get_named("llama-3-instruct") is NAMED["llama-3"]
    vic = get_named("vicuna").render([{"role": "user", "content": "q"}], add_generation_prompt=False)
    assert vic.startswith("A chat between") and vic.endswith("USER: q ")
    with pytest.raises(ValueError, match="unknown chat template 'nope'"):
        load_chat_template(None, "nope")
    with pytest.raises(ValueError, match="does not exist"):
        load_chat_template(None, str(tmp_path / "missing.jinja"))
    j = tmp_path / "t.json"
    j.write_text(json.dumps({"name": "mine", "system": "<|im_start|>system", "user": "<|im_start|>user",
                             "assistant": "<|im_start|>assistant", "sep_style": "CHATML", "sep": "<|im_end|>",
                             "stop_str": ["<|im_end|>"]}))
    assert load_chat_template(None, str(j)).render(MSGS[:2]) == chatml.render(MSGS[:2])
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    t = load_chat_template(None, str(jinja))
    assert t.render(MSGS, add_generation_prompt=False) == "[system]S[user]hi[assistant]yo[user]more"
    assert t.roles == NAMED["default"].roles  # no named template renders like it: default role strings
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        t.render([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="content\\[0\\] has type 'image_url'"):
        chatml.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


def test_from_jinja_detects_llama3_roles():
    src = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
           "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    assert from_jinja(src).roles == NAMED["llama-3"].roles


class _FakeOpenAIServer:
    def __init__(self, content: str = "Paris.") -> None:
        self.bodies: list[dict] = []
        self.content = content

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append({"path": request.url.path, **body})
        if request.url.path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": self.content}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": " Paris.", "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        return httpx.Response(200, json={"id": "x1", "object": obj, "created": 0, "model": body["model"],
                                         "choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                                                        "total_tokens": 7}})


@pytest.fixture
def fake_openai():
    server = _FakeOpenAIServer()
    client = httpx.Client(transport=httpx.MockTransport(server))
    yield server, client


def test_openai_chat_backend_sends_messages_and_maps_params(fake_openai):
    server, client = fake_openai
    be = sgl.OpenAI("gpt-test", base_url="http://fake/v1", http_client=client)

    @sgl.function
    def qa(s, q):
        s += sgl.system("Be brief.")
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen("answer", max_tokens=8, stop=["\n"], top_k=5))

    state = qa.run(q="Capital of France?", temperature=0, backend=be)
    assert state["answer"] == "Paris."
    assert state.messages()[-1] == {"role": "assistant", "content": "Paris."}
    body = server.bodies[0]
    assert body["path"] == "/v1/chat/completions"
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Capital of France?"}]
    assert body["max_tokens"] == 8 and body["stop"] == ["\n"] and body["temperature"] == 0 and body["top_k"] == 5


def test_openai_json_schema_becomes_response_format(fake_openai):
    server, client = fake_openai
    be = sgl.OpenAI("gpt-test", base_url="http://fake/v1", http_client=client)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    sgl.function(lambda s: [s.__iadd__(sgl.user("Where?")),
                            s.__iadd__(sgl.assistant(sgl.gen("j", json_schema=schema)))]).run(backend=be)
    assert server.bodies[0]["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "output", "schema": schema, "strict": True}}


def test_openai_completion_model_sends_the_prompt(fake_openai):
    server, client = fake_openai
    be = sgl.OpenAI("gpt-3.5-turbo-instruct", base_url="http://fake/v1", http_client=client)
    state = sgl.function(lambda s: s.__iadd__("Q: capital?\nA:" + sgl.gen("a", max_tokens=4))).run(backend=be)
    assert state["a"] == " Paris." and server.bodies[0]["prompt"] == "Q: capital?\nA:"


def test_openai_backend_errors_name_the_unsupported_feature(fake_openai):
    _, client = fake_openai
    be = sgl.OpenAI("gpt-test", base_url="http://fake/v1", http_client=client)

    @sgl.function
    def with_regex(s):
        s += sgl.user("n?")
        s += sgl.assistant(sgl.gen("n", regex="[0-9]+"))

    @sgl.function
    def with_select(s):
        s += sgl.user("pick")
        s += sgl.assistant(sgl.select("c", choices=["a", "b"]))

    @sgl.function
    def outside_assistant(s):
        s += "free text" + sgl.gen("x")

    with pytest.raises(sgl.ProgramError, match="regex-constrained"):
        with_regex.run(backend=be)
    with pytest.raises(sgl.ProgramError, match="regex-constrained.*engine or RuntimeEndpoint"):
        sgl.function(lambda s: [s.__iadd__(sgl.user("n?")), s.__iadd__(sgl.assistant(sgl.gen_int("n")))]).run(backend=be)
    with pytest.raises(sgl.ProgramError, match="cannot do select"):
        with_select.run(backend=be)
    with pytest.raises(sgl.ProgramError, match="start of an assistant turn"):
        outside_assistant.run(backend=be)
    real = sgl.OpenAI("gpt-test", http_client=client)  # api.openai.com has no top_k
    with pytest.raises(sgl.ProgramError, match="no 'top_k'"):
        sgl.function(lambda s: [s.__iadd__(sgl.user("q")), s.__iadd__(sgl.assistant(sgl.gen("a", top_k=3)))]
                     ).run(backend=real)


def _endpoint(handler, **kw):
    return sgl.RuntimeEndpoint("http://fake", transport=httpx.MockTransport(handler), **kw)


def test_runtime_endpoint_maps_http_errors_and_sends_the_key():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if body["sampling_params"].get("temperature") == -1:
            return httpx.Response(400, json={"object": "error", "error": {"message": "temperature must be >= 0"}})
        return httpx.Response(503, text="overloaded")

    be = _endpoint(handler, api_key="sekret")

    @sgl.function
    def prog(s):
        s += "x" + sgl.gen("a", max_tokens=2)

    with pytest.raises(sgl.ProgramError, match="bad request: temperature must be >= 0"):
        prog.run(temperature=-1, backend=be)
    with pytest.raises(sgl.ProgramError, match="HTTP 503: overloaded"):
        prog.run(backend=be)
    assert seen[0].headers["authorization"] == "Bearer sekret" and seen[0].url.path == "/generate"
    unreachable = sgl.RuntimeEndpoint("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(sgl.ProgramError, match="cannot reach http://127.0.0.1:9/generate"):
        prog.run(backend=unreachable)


def test_runtime_endpoint_parses_sse_streams_and_in_band_errors():
    def ok(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        chunks = [{"text": "He", "meta_info": {}}, {"text": "Hello", "meta_info": {"completion_tokens": 2}}]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    def broken(request: httpx.Request) -> httpx.Response:
        body = 'data: {"text": "He", "meta_info": {}}\n\ndata: {"object": "error", "error": {"message": "boom"}}\n\n'
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    @sgl.function
    def prog(s):
        s += "x" + sgl.gen("a", max_tokens=2)

    state = prog.run(stream=True, backend=_endpoint(ok))
    assert list(state.text_iter()) == ["x", "He", "llo"] and state.get_meta_info("a")["completion_tokens"] == 2
    with pytest.raises(sgl.ProgramError, match="boom"):
        list(prog.run(stream=True, backend=_endpoint(broken)).text_iter())


SPEC_REPLY = "Name: Bob\nBirthday: May 1\nJob: chef"


@sgl.function(num_api_spec_tokens=64)
def character_spec(s):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user("Generate a new Name, Birthday and Job.")
    s += sgl.assistant("Name:" + sgl.gen("name", stop="\n") + "\nBirthday:" + sgl.gen("birthday", stop="\n")
                       + "\nJob:" + sgl.gen("job", stop="\n"))


def test_api_speculative_execution_on_a_chat_model_makes_one_call_per_assistant_block():
    server = _FakeOpenAIServer(SPEC_REPLY)
    be = sgl.OpenAI("gpt-test", base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(server)))
    state = character_spec.run(backend=be)
    assert (state["name"], state["birthday"], state["job"]) == (" Bob", " May 1", " chef")
    assert len(server.bodies) == 1 and server.bodies[0]["max_tokens"] == 64 and "stop" not in server.bodies[0]
    assert server.bodies[0]["messages"][-1] == {"role": "user", "content": "Generate a new Name, Birthday and Job."}
    assert state.messages()[-1] == {"role": "assistant", "content": SPEC_REPLY}

    off = _FakeOpenAIServer("I'd rather not.")
    be = sgl.OpenAI("gpt-test", base_url="http://fake/v1", http_client=httpx.Client(transport=httpx.MockTransport(off)))
    with pytest.raises(sgl.ProgramError, match="speculative execution.*gen 'name'"):
        character_spec.run(backend=be)
    assert len(off.bodies) == 3  # retried


def test_api_speculative_execution_on_a_completion_backend_reuses_one_generation():
    from lang_fakes import ScriptedBackend

    @sgl.function(num_api_spec_tokens=64)
    def character(s):
        s += "Construct a character.\n"
        s += "Name:" + sgl.gen("name", stop="\n") + "\nBirthday:" + sgl.gen("birthday", stop="\n")
        s += "\nJob:" + sgl.gen("job", stop="\n") + "\n"

    be = ScriptedBackend(reply=lambda prompt, sp: SPEC_REPLY[len("Name:"):] + "\nmore")
    state = character.run(backend=be)
    assert (state["name"], state["birthday"], state["job"]) == (" Bob", " May 1", " chef")
    assert len(be.requests) == 1 and "stop" not in be.requests[0]["sampling_params"]
    assert state.text() == "Construct a character.\n" + SPEC_REPLY + "\n"
    plain = ScriptedBackend(reply=lambda prompt, sp: SPEC_REPLY[len("Name:"):] + "\nmore")
    sgl.function(character.func).run(backend=plain)
    assert len(plain.requests) == 3  # without speculation: one call per gen
