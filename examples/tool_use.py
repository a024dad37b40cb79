"""SGLang README: choose a tool with `choices=` (select), then branch in plain Python on the result.

    python examples/tool_use.py [--url http://127.0.0.1:30000]
"""
from __future__ import annotations

import sglang as sgl

MAX_TOKENS = 32


@sgl.function
def tool_use(s, question):
    s += "To answer this question: " + question + ". "
    s += "I need to use a " + sgl.gen("tool", choices=["calculator", "search engine"]) + ". "
    if s["tool"] == "calculator":
        s += "The math expression is" + sgl.gen("expression", max_tokens=MAX_TOKENS, stop="\n")
    elif s["tool"] == "search engine":
        s += "The key word to search is" + sgl.gen("word", max_tokens=MAX_TOKENS, stop="\n")


def main() -> None:
    for q in ("What is 3 * 19 + 7?", "Who won the 2010 football world cup?"):
        state = tool_use.run(question=q, temperature=0)
        print(q, "->", state["tool"], state.get_meta_info("tool")["scores"])
        print(state.text(), "\n")


if __name__ == "__main__":
    from _backend import setup_backend

    setup_backend()
    main()
