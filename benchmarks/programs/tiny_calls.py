"""Many tiny calls (generative agents): an agent's short memory, then 8 chained 4-token decisions."""
import sglang as sgl

from . import tokens

NAME = "tiny_calls"
NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana")
PLACES = ("the cafe", "the library", "the park", "the market", "home", "the office", "the gym", "the beach")
QUESTIONS = ("Mood", "Next place", "Who to talk to", "What to say", "What to eat", "What to buy", "Plan for tonight",
             "One word for today")


def build(scale: float = 1.0):
    call_len = tokens(4, scale)

    @sgl.function
    def tiny_calls(s, name, place):
        s += "Agent " + name + " is at " + place + ". Answer each question in a few words.\n"
        for k, q in enumerate(QUESTIONS):
            s += q + ":" + sgl.gen("a" + str(k), max_tokens=call_len, temperature=0, ignore_eos=True) + "\n"
        return s["a" + str(len(QUESTIONS) - 1)]  # depends on every earlier answer

    return tiny_calls


def rows(n: int) -> list:
    return [{"name": f"{NAMES[i % len(NAMES)]}{i}", "place": PLACES[(i * 3) % len(PLACES)]} for i in range(n)]
