"""SGLang README: fork the state into parallel branches, then use each branch's result in order.

    python examples/tip_suggestion.py [--url http://127.0.0.1:30000]
"""
from __future__ import annotations

import sglang as sgl

MAX_TOKENS = 256


@sgl.function
def tip_suggestion(s):
    s += (
        "Here are two tips for staying healthy: "
        "1. Balanced Diet. 2. Regular Exercise.\n\n"
    )
    forks = s.fork(2)
    for i, f in enumerate(forks):
        f += f"Now, expand tip {i+1} into a paragraph:\n"
        f += sgl.gen("detailed_tip", max_tokens=MAX_TOKENS, stop="\n\n")
    s += "Tip 1:" + forks[0]["detailed_tip"] + "\n"
    s += "Tip 2:" + forks[1]["detailed_tip"] + "\n"
    s += "In summary" + sgl.gen("summary", max_tokens=MAX_TOKENS)


def main() -> None:
    state = tip_suggestion.run()
    print(state.text())
    print("\n-- the traced IR of this program --\n" + tip_suggestion.trace().pretty())


if __name__ == "__main__":
    from _backend import setup_backend

    setup_backend()
    main()
