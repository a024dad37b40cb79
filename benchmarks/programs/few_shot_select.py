"""Few-shot select (HellaSwag style): a 40-shot prefix shared by every item, then a context and a
select among 4 endings (the choices are whole continuations, so the select's logprob work is real)."""
import sglang as sgl

NAME = "few_shot_select"
SUBJECTS = ("A man", "A woman", "The chef", "A child", "The teacher", "A dog", "The driver", "A runner")
ACTIONS = ("opens the fridge", "picks up a guitar", "ties a shoe", "paints a fence", "washes a car",
           "climbs a ladder", "reads a map", "kneads dough", "waters a plant", "folds a shirt")
ENDINGS = ("and takes out a bottle of milk.", "and starts to play a slow song.", "and pulls the laces tight.",
           "with long, even strokes of the brush.", "with a soapy sponge and a hose.",
           "to reach the top shelf.", "to find the shortest way home.", "until it is smooth and soft.",
           "until the soil is damp.", "and puts it in the drawer.")
SHOTS = 40


def _example(k: int) -> tuple:
    a = k % len(ACTIONS)
    return f"{SUBJECTS[k % len(SUBJECTS)]} {ACTIONS[a]}", ENDINGS[a]


FEW_SHOT = "".join(f"Context: {c}\nEnding: {e}\n\n" for c, e in (_example(k) for k in range(SHOTS)))


def build(scale: float = 1.0):
    @sgl.function
    def few_shot_select(s, context, choices):
        s += FEW_SHOT
        s += "Context: " + context + "\nEnding:" + sgl.select("ending", choices=choices)
        return s["ending"]

    return few_shot_select


def rows(n: int) -> list:
    out = []
    for i in range(n):
        ctx, right = _example(SHOTS + 3 * i + 1)
        wrong = [ENDINGS[(ENDINGS.index(right) + d) % len(ENDINGS)] for d in (3, 5, 7)]
        choices = [" " + e for e in wrong[: i % 4] + [right] + wrong[i % 4:]]
        out.append({"context": f"{ctx} (scene {i})", "choices": choices})
    return out
