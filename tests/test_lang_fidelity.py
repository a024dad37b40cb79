"""Frontend fidelity (issue 12, item 5): a json_schema keeps its property order and may be a pydantic class,
on every path that takes one (gen in the interpreter, a traced+compiled function, a .sgl program, the gen
checks); HTTP clients use the server's own chat template, which the server sends in /get_model_info."""
from __future__ import annotations

import json

import httpx
import pydantic
import pytest

import sglang as sgl
from lang_fakes import ScriptedBackend
from sglang.compiler.executor import PlanExecutor
from sglang.compiler.lower import compile_function, compile_source
from sglang.lang.gen_rules import json_schema_text
from sglang.runtime.chat_template import NAMED, ChatTemplate, from_jinja, get_named

# deliberately not in alphabetical order: sorting would put age first
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


class Person(pydantic.BaseModel):
    name: str
    age: int


def _sent_schemas(backend: ScriptedBackend) -> list[dict]:
    """The json_schema of every prompt sent (a batched request carries one sampling_params per prompt)."""
    sps = [sp for r in backend.requests for sp in (r["sampling_params"] if isinstance(r["sampling_params"], list)
                                                   else [r["sampling_params"]])]
    return [json.loads(sp["json_schema"]) for sp in sps if sp.get("json_schema")]


def test_json_schema_text_keeps_key_order_and_takes_strings_dicts_and_pydantic_classes():
    assert list(json.loads(json_schema_text(PERSON))["properties"]) == ["name", "age"]
    assert json_schema_text('{"b": 1, "a": 2}') == '{"b": 1, "a": 2}'
    from_class = json.loads(json_schema_text(Person))
    assert list(from_class["properties"]) == ["name", "age"] and from_class["required"] == ["name", "age"]
    with pytest.raises(TypeError, match="pydantic model class"):
        json_schema_text(Person(name="a", age=1))  # an instance is not a schema


@pytest.mark.parametrize("schema", [PERSON, Person, json.dumps(PERSON)], ids=["dict", "pydantic", "str"])
def test_interpreter_sends_the_schema_with_its_property_order(schema):
    @sgl.function
    def prog(s):
        s += "Person: " + sgl.gen("p", max_tokens=8, json_schema=schema)

    be = ScriptedBackend()
    prog.run(backend=be)
    (sent,) = _sent_schemas(be)
    assert list(sent["properties"]) == ["name", "age"]


@pytest.mark.parametrize("schema", [PERSON, Person], ids=["dict", "pydantic"])
def test_compiled_function_sends_the_schema_with_its_property_order(schema):
    @sgl.function
    def prog(s, who):
        s += who + ": " + sgl.gen("p", max_tokens=8, json_schema=schema)

    be = ScriptedBackend()
    PlanExecutor(compile_function(prog), be).run_batch(None, [{"who": "Ann"}])
    (sent,) = _sent_schemas(be)
    assert list(sent["properties"]) == ["name", "age"]


def test_sgl_program_dict_schema_keeps_its_property_order():
    src = '''
def person() {
    "Person: " gen p(max_tokens=8, json_schema={"type": "object", "properties": {"name": {"type": "string"},
                                                "age": {"type": "integer"}}})
    return p
}
'''
    be = ScriptedBackend()
    PlanExecutor(compile_source(text=src, file="person.sgl"), be).run_batch("person", [{}])
    (sent,) = _sent_schemas(be)
    assert list(sent["properties"]) == ["name", "age"]


def test_gen_rejects_a_schema_of_another_type_by_name():
    with pytest.raises(TypeError, match="gen 'p': json_schema must be a JSON string, a dict or a pydantic"):
        sgl.gen("p", json_schema=42)
    with pytest.raises(ValueError, match="json_schema is not valid JSON"):
        sgl.gen("p", json_schema="{oops")


# ------------------------------------------------------------------ chat template over HTTP

@pytest.mark.parametrize("template", list(NAMED.values()) + [from_jinja("{{ messages }}", "<s>", "</s>", "j")],
                         ids=lambda t: t.name)
def test_chat_template_round_trips_through_json(template):
    assert ChatTemplate.from_dict(json.loads(json.dumps(template.to_dict()))) == template


def test_chat_template_from_dict_names_missing_roles():
    with pytest.raises(ValueError, match="roles must give"):
        ChatTemplate.from_dict({"name": "x", "roles": {"user": ["U:", "\n"]}})


def _info_endpoint(info: dict, **kw):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/get_model_info"
        return httpx.Response(200, json=info)

    return sgl.RuntimeEndpoint("http://fake", transport=httpx.MockTransport(handler), **kw)


def test_runtime_endpoint_uses_the_template_the_server_sends():
    chatml = get_named("chatml")
    # model_path "default" alone would pick the SYSTEM:/USER: fallback: the sent template must win
    be = _info_endpoint({"model_path": "default", "chat_template": chatml.to_dict()})
    assert be.chat_template() == chatml
    # an older server (SGLang 0.2.x) sends none: the template is picked by the model's name
    assert _info_endpoint({"model_path": "meta-llama/Llama-3.2-1B-Instruct"}).chat_template() == get_named("llama-3")
    # an explicit template beats the server's
    assert _info_endpoint({"chat_template": chatml.to_dict()}, chat_template="vicuna").chat_template() == \
        get_named("vicuna")


@pytest.fixture(scope="module")
def engine(default_engine):
    return default_engine


def test_server_model_info_sends_its_chat_template_and_programs_use_it(server, engine):
    info = httpx.get(server.url + "/get_model_info", timeout=30).json()
    served = ChatTemplate.from_dict(info["chat_template"])
    assert served.roles == get_named("chatml").roles  # SmolLM2's jinja template has chatml roles

    @sgl.function
    def chat(s):
        s += sgl.user("Hi")
        s += sgl.assistant(sgl.gen("a", max_tokens=2))

    state = chat.run(backend=sgl.RuntimeEndpoint(server.url), temperature=0)
    assert state.text().startswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
