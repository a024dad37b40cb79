"""SGLang README quick start: a multi-turn chat with system/user/assistant roles.

    python examples/quick_start.py [--url http://127.0.0.1:30000]
"""
from __future__ import annotations

import sglang as sgl

MAX_TOKENS = 256


@sgl.function
def multi_turn_question(s, question_1, question_2):
    s += sgl.system("You are a helpful assistant.")
    s += sgl.user(question_1)
    s += sgl.assistant(sgl.gen("answer_1", max_tokens=MAX_TOKENS))
    s += sgl.user(question_2)
    s += sgl.assistant(sgl.gen("answer_2", max_tokens=MAX_TOKENS))


def main() -> None:
    state = multi_turn_question.run(
        question_1="What is the capital of the United States?",
        question_2="List two local attractions.",
    )
    for m in state.messages():
        print(m["role"], ":", m["content"])
    print("\n-- answer_1 --\n" + state["answer_1"])


if __name__ == "__main__":
    from _backend import setup_backend

    setup_backend()
    main()
