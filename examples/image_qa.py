"""SGLang README: ask about an image.

    python examples/image_qa.py                      # CPU, a tiny RANDOM LLaVA built on the spot (says so)
    python examples/image_qa.py --model-path PATH    # a real vision-language model (e.g. llava-1.5-7b) [IMAGE]
    python examples/image_qa.py --url http://127.0.0.1:30000 [IMAGE]

With no model or server given it builds a tiny random llava-1.5 (SmolLM2's tokenizer plus "<image>") in a
temporary folder and runs this program and examples/image_qa.sgl (compiled) on it: the answers are noise,
but the image really goes through preprocessing, the vision tower and the prefix cache. On a text-only
model (e.g. the default SmolLM2) the program fails with an error saying so.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import sglang as sgl

HERE = Path(__file__).resolve().parent


@sgl.function
def image_qa(s, image_file, question):
    s += sgl.user(sgl.image(image_file) + question)
    s += sgl.assistant(sgl.gen("answer", max_tokens=256))


def main(image_file: str = "example_image.png") -> None:
    try:
        state = image_qa.run(image_file=image_file, question="What is this?")
        print(state["answer"])
    except sgl.ProgramError as exc:
        print(exc)


def example_image(folder: Path) -> str:
    """A small gradient PNG (the tiny model needs no real photo)."""
    import numpy as np
    from PIL import Image

    grad = np.add.outer(np.arange(64), np.arange(96)).astype(np.uint8)
    path = folder / "example_image.png"
    Image.fromarray(np.stack([grad, 255 - grad, grad // 2], axis=-1)).save(path)
    return str(path)


def run_tiny() -> None:
    from sglang.compiler.executor import PlanExecutor
    from sglang.compiler.lower import compile_source
    from sglang.runtime.model_loader import resolve_model_path
    from sglang.runtime.multimodal.tiny import build_tiny_llava

    print("No model given: running on CPU with a tiny RANDOM LLaVA (llava-1.5 layout, random weights): the "
          "answers below are noise. Pass --model-path PATH (a real VLM) or --url URL for real answers.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_tiny_llava(folder / "tiny-llava", resolve_model_path("default"))
        image = example_image(folder)
        engine = sgl.Engine(model_path=str(folder / "tiny-llava"), device="cpu", dtype="float32",
                            max_total_tokens=4096)
        try:
            backend = sgl.EngineBackend(engine)
            state = image_qa.run(image_file=image, question="What is this?", max_new_tokens=16, temperature=0,
                                 backend=backend)
            print("python program:", repr(state["answer"][:80]))
            plan = compile_source(HERE / "image_qa.sgl")
            out = PlanExecutor(plan, backend, default_sampling={"temperature": 0, "max_new_tokens": 16}).run(
                "image_qa", {"image_path": image})
            print("compiled image_qa.sgl:", repr(out["return"][:80]))
            for question in ("What?", "Why?"):  # the second request finds the image's tokens in the cache
                meta = engine.generate(f"USER: <image>\n{question}", {"max_new_tokens": 1}, image_data=image)["meta_info"]
                print(f"{question!r}: {meta['prompt_tokens']} prompt tokens, {meta['cached_tokens']} from the cache")
        finally:
            engine.shutdown()


if __name__ == "__main__":
    if not any(a.startswith(("--model-path", "--url", "--openai")) for a in sys.argv[1:]):
        run_tiny()
    else:
        from _backend import setup_backend

        main(*setup_backend().rest[:1])
