"""A vision-language model behind the HTTP server (tiny random llava-1.5 on CPU): native /generate with
image_data (data URL, base64, local path, lists for batches), OpenAI /v1/chat/completions with image_url
parts (data URLs, local files), and bad image input answered with a 4xx naming the field while the server
keeps serving."""
from __future__ import annotations

import base64
import io

import httpx
import pytest

from vlm_helpers import build_servable_llava, make_image

PROMPT = "USER: <image>\nDescribe it. ASSISTANT:"
GREEDY = {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}


def data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def engine(tmp_path_factory, default_model_path):
    from sglang.runtime.engine import Engine

    folder = tmp_path_factory.mktemp("tiny_llava_server")
    build_servable_llava(folder, default_model_path)
    eng = Engine(model_path=str(folder), device="cpu", dtype="float32", max_total_tokens=4096)
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_generate_with_image_data_shares_the_image_prefix(client, engine):
    engine.flush_cache()
    url = data_url(make_image((30, 140, 220)))
    first = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY, "image_data": url})
    again = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY,
                                          "image_data": url.split(",", 1)[1]})  # bare base64
    assert first.status_code == again.status_code == 200, first.text
    ntok = engine.multimodal.processor.process_image(make_image((30, 140, 220))).num_tokens
    assert again.json()["meta_info"]["cached_tokens"] >= ntok
    assert again.json()["text"] == first.json()["text"]


def test_generate_batch_and_local_path(client, tmp_path):
    a, b = make_image((250, 20, 20)), make_image((20, 20, 250))
    path = tmp_path / "b.png"
    b.save(path)
    batch = client.post("/generate", json={"text": [PROMPT, PROMPT], "sampling_params": GREEDY,
                                           "image_data": [data_url(a), str(path)]})
    assert batch.status_code == 200, batch.text
    one = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY, "image_data": data_url(b)})
    assert batch.json()[1]["text"] == one.json()["text"]


@pytest.mark.parametrize("image_data,message", [
    ("data:image/png;base64," + base64.b64encode(b"garbage bytes").decode(), "supported format"),
    ("https://example.com/x.png", "not fetched"),
    ([data_url(make_image((1, 1, 1)))] * 17, "too many images"),
    ("data:image/png;base64,!!!", "base64"),
])
def test_generate_bad_image_is_a_400_and_the_server_keeps_serving(client, image_data, message):
    r = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY, "image_data": image_data})
    assert r.status_code == 400
    assert message in r.text and "image_data" in r.text
    ok = client.post("/generate", json={"text": PROMPT, "sampling_params": GREEDY,
                                        "image_data": data_url(make_image((9, 9, 9)))})
    assert ok.status_code == 200


MODEL: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def model_name(client):
    MODEL["name"] = client.get("/v1/models").json()["data"][0]["id"]


def chat_body(*parts, **extra):
    return {"model": MODEL["name"], "messages": [{"role": "user", "content": list(parts)}], "max_tokens": 4,
            "temperature": 0, **extra}


def test_chat_completions_with_image_url_parts(client, tmp_path):
    img = make_image((100, 200, 50))
    path = tmp_path / "pic.png"
    img.save(path)
    text = {"type": "text", "text": "What is this?"}
    by_url = client.post("/v1/chat/completions", json=chat_body({"type": "image_url", "image_url": {"url": data_url(img)}}, text))
    by_path = client.post("/v1/chat/completions", json=chat_body({"type": "image_url", "image_url": {"url": str(path)}}, text))
    no_image = client.post("/v1/chat/completions", json=chat_body(text))
    assert by_url.status_code == by_path.status_code == no_image.status_code == 200, by_url.text
    assert by_url.json()["choices"][0]["message"] == by_path.json()["choices"][0]["message"]
    ntok = 16  # 4x4 patches of the tiny tower
    assert by_url.json()["usage"]["prompt_tokens"] == no_image.json()["usage"]["prompt_tokens"] + ntok


@pytest.mark.parametrize("url,message", [
    ("http://example.com/cat.png", "not fetched"),
    ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode(), "image"),
    ("/does/not/exist.png", "does not exist"),
])
def test_chat_bad_image_url_is_a_400(client, url, message):
    r = client.post("/v1/chat/completions", json=chat_body({"type": "image_url", "image_url": {"url": url}}))
    assert r.status_code == 400, r.text
    assert message in r.text
    ok = client.post("/v1/chat/completions", json=chat_body({"type": "text", "text": "hi"}))
    assert ok.status_code == 200
