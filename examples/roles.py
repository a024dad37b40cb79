"""SGLang README: roles as blocks, `with s.user():`, and the explicit begin/end forms.

    python examples/roles.py [--url http://127.0.0.1:30000]
"""
from __future__ import annotations

import sglang as sgl

MAX_TOKENS = 100


@sgl.function
def chat_example(s):
    s += sgl.system("You are a helpful assistant.")
    # Same as: s += s.system("You are a helpful assistant.")
    with s.user():
        s += "Question: What is the capital of France?"
    s += sgl.assistant_begin()
    s += "Answer: " + sgl.gen("answer", max_tokens=MAX_TOKENS, stop="\n")
    s += sgl.assistant_end()


def main() -> None:
    state = chat_example.run(temperature=0)
    for m in state.messages():
        print(m["role"], ":", m["content"])


if __name__ == "__main__":
    from _backend import setup_backend

    setup_backend()
    main()
