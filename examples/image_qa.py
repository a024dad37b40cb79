"""SGLang README: ask about an image. Needs a vision-language model; on a text-only model (the default
SmolLM2) the program fails with an error saying so.

    python examples/image_qa.py --url http://127.0.0.1:30000 [IMAGE]
"""
from __future__ import annotations

import sglang as sgl


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


if __name__ == "__main__":
    from _backend import setup_backend

    main(*setup_backend().rest[:1])
