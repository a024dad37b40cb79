"""SGLang README: run a program over a batch (threads keep the engine's batch full) and stream one.

    python examples/batching_streaming.py [--url http://127.0.0.1:30000]
"""
from __future__ import annotations

import sglang as sgl

MAX_TOKENS = 64


@sgl.function
def text_qa(s, question):
    s += "Q: " + question + "\n"
    s += "A:" + sgl.gen("answer", stop="\n", max_tokens=MAX_TOKENS)


QUESTIONS = [
    {"question": "What is the capital of the United Kingdom?"},
    {"question": "What is the capital of France?"},
    {"question": "What is the capital of Japan?"},
]


def main() -> None:
    states = text_qa.run_batch(QUESTIONS, progress_bar=True, temperature=0)
    for q, s in zip(QUESTIONS, states):
        print(q["question"], "->", s["answer"])
    state = text_qa.run(question="What is the capital of France?", temperature=0.1, stream=True)
    for out in state.text_iter():
        print(out, end="", flush=True)
    print()


if __name__ == "__main__":
    from _backend import setup_backend

    setup_backend()
    main()
