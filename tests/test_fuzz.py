"""Fuzzing at a small budget (benchmarks/fuzz.py runs the same at a large one): HTTP bodies generated
from the server's OpenAPI schema never get a 5xx and /health keeps answering; generated `.sgl`
programs parse and compile or fail with an SglError, never another exception. Derandomized: the same
cases every run."""
from __future__ import annotations

import pytest

pytest.importorskip("schemathesis")

from fuzz_helpers import fuzz_http, fuzz_sgl  # noqa: E402

from sglang.runtime.server.launch import BackgroundServer  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_llama_path):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=4096,
                 max_batch_size_per_request=8, random_seed=1, served_model_name="tiny")
    with BackgroundServer(eng) as srv:
        yield srv
    eng.shutdown()


def test_openapi_schema_documents_the_request_bodies(server):
    import httpx

    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/GenerateRequest"}
    assert "sampling_params" in spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert "messages" in spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline


def test_http_fuzz_finds_no_server_error(server):
    figures = fuzz_http(server.url, max_examples=25)
    assert figures.cases == 4 * 25 and sum(figures.statuses.values()) == figures.cases
    assert figures.server_errors == 0, "\n".join(figures.failures)
    assert figures.statuses.get(200, 0) > 0 and figures.statuses.get(400, 0) > 0  # both kinds were reached


def test_sgl_fuzz_finds_no_crash():
    figures = fuzz_sgl(max_examples=150)
    assert figures.cases == 150
    assert figures.server_errors == 0, "\n".join(figures.failures)
    assert figures.statuses.get(200, 0) > 0 and figures.statuses.get(400, 0) > 0
