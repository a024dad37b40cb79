"""Multi-turn chat: a system message and 4 user turns, each answered in 48 tokens (the chat template of
the server's model, as each frontend renders it)."""
import sglang as sgl

from . import tokens

NAME = "multi_turn_chat"
TURNS = 4
TOPICS = ("volcanoes", "the Roman empire", "photosynthesis", "jazz", "black holes", "the printing press",
          "coral reefs", "the internet")
FOLLOW_UPS = ("Tell me about ", "What is the most surprising fact about it?",
              "How would you explain that to a child?", "Summarize our conversation in one sentence.")


def build(scale: float = 1.0):
    turn_len = tokens(48, scale)

    @sgl.function
    def multi_turn_chat(s, topic):
        s += sgl.system("You are a knowledgeable and concise assistant.")
        for k in range(TURNS):
            s += sgl.user(FOLLOW_UPS[k] + topic + "." if k == 0 else FOLLOW_UPS[k])
            s += sgl.assistant(sgl.gen("answer_" + str(k), max_tokens=turn_len, temperature=0, ignore_eos=True))
        return s["answer_" + str(TURNS - 1)]  # depends on every turn

    return multi_turn_chat


def rows(n: int) -> list:
    return [{"topic": f"{TOPICS[i % len(TOPICS)]} (part {i})"} for i in range(n)]
