"""`sgl.image` in programs on a vision-language model (tiny random llava-1.5 on CPU): in-process
(EngineBackend), over HTTP (RuntimeEndpoint: local files travel as data URLs) and as a compiled .sgl plan,
with every accepted image form; each gives the engine's own answer for the same prompt and image."""
from __future__ import annotations

import json

import io
from pathlib import Path

import pytest

import sglang as sgl
from vlm_helpers import build_servable_llava, make_image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GREEDY = {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, default_model_path):
    from sglang.runtime.engine import Engine

    folder = tmp_path_factory.mktemp("tiny_llava_frontend")
    build_servable_llava(folder, default_model_path)
    eng = Engine(model_path=str(folder), device="cpu", dtype="float32", max_total_tokens=4096)
    yield eng
    eng.shutdown()


@sgl.function
def describe(s, img):
    s += "USER: " + sgl.image(img) + "\nWhat is it? ASSISTANT:"
    s += sgl.gen("answer", max_tokens=6, temperature=0, ignore_eos=True)


def direct(engine, img) -> str:
    return engine.generate("USER: <image>\nWhat is it? ASSISTANT:", GREEDY, image_data=img)["text"]


def test_every_image_form_in_a_program_gives_the_engines_answer(engine, tmp_path):
    img = make_image((40, 180, 90))
    path = tmp_path / "pic.png"
    img.save(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    backend = sgl.EngineBackend(engine)
    expected = direct(engine, img)
    for form in (img, buf.getvalue(), str(path), path):
        assert describe.run(img=form, backend=backend)["answer"] == expected
    other = describe.run(img=make_image((200, 30, 30)), backend=backend)["answer"]
    assert other == direct(engine, make_image((200, 30, 30)))


def test_runtime_endpoint_sends_local_files_as_data_urls(engine, tmp_path):
    from sglang.runtime.server.launch import BackgroundServer

    img = make_image((10, 90, 250))
    path = tmp_path / "remote.png"
    img.save(path)
    with BackgroundServer(engine) as srv:
        backend = sgl.RuntimeEndpoint(srv.url)
        sent = []
        real = backend.http.request

        def spy(method, path, body=None):
            sent.append(json.loads(body) if body else None)
            return real(method, path, body)

        backend.http.request = spy
        state = describe.run(img=str(path), backend=backend)
    assert state["answer"] == direct(engine, img)
    image_data = [p["image_data"] for p in sent if p and "image_data" in p]
    assert image_data and all(d.startswith("data:") for d in image_data)


def test_compiled_sgl_plan_with_an_image(engine, tmp_path):
    from sglang.compiler.executor import PlanExecutor
    from sglang.compiler.lower import compile_source

    img = make_image((90, 90, 20))
    path = tmp_path / "plan.png"
    img.save(path)
    plan = compile_source(EXAMPLES / "image_qa.sgl")
    out = PlanExecutor(plan, sgl.EngineBackend(engine), default_sampling={"temperature": 0}).run("image_qa", {"image_path": str(path), "question": "Hm?"})
    # the plan and the interpreter render the same prompt, so they agree
    @sgl.function
    def same(s, image_path, question):
        s += sgl.user(sgl.image(image_path) + question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=64))

    ref = same.run(image_path=str(path), question="Hm?", backend=sgl.EngineBackend(engine), temperature=0)
    assert out["return"] == ref["answer"]


def test_text_only_engine_still_refuses_images(tiny_llama_path):
    from sglang.runtime.engine import Engine

    with Engine(model_path=tiny_llama_path, device="cpu", dtype="float32", load_format="dummy",
                max_total_tokens=1024) as eng:
        with pytest.raises(sgl.ProgramError, match="text-only"):
            describe.run(img=make_image((1, 2, 3)), backend=sgl.EngineBackend(eng))


def test_image_qa_example_runs_on_a_tiny_random_llava_and_says_so():
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(EXAMPLES.parent))
    proc = subprocess.run([sys.executable, str(EXAMPLES / "image_qa.py")], cwd=EXAMPLES, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tiny RANDOM LLaVA" in proc.stdout and "compiled image_qa.sgl:" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]  # 'Why?': N prompt tokens, M from the cache
    assert int(last.split(", ")[1].split()[0]) > 16  # more than the text before the image: its 16 tokens too
