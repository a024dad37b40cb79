"""LLM judge (SGLang paper, multi-dimensional judge): system + question, a 6-way fork of 64-token
judgments, then the judgments merged back and a 16-token verdict."""
import sglang as sgl

from . import tokens

NAME = "llm_judge"
SYSTEM = ("System: You are a strict but fair reviewer of short answers. Judge the answer below on the "
          "dimension you are given, in a few sentences, citing concrete problems.\n")
DIMENSIONS = ("correctness", "clarity", "completeness", "conciseness", "tone", "use of evidence")
QUESTIONS = ("Why is the sky blue?", "How do vaccines train the immune system?", "What causes ocean tides?",
             "Why do leaves change colour in autumn?", "How does a refrigerator keep food cold?",
             "What makes bread rise?", "Why does ice float on water?", "How do bees make honey?")
ANSWERS = ("Because of the way air scatters light.", "They show the body a harmless copy of a germ.",
           "Mostly the pull of the moon.", "Chlorophyll breaks down and other pigments show.",
           "It pumps heat out of the box.", "Yeast makes gas bubbles.", "It is less dense than water.",
           "They collect nectar and evaporate the water out of it.")


def build(scale: float = 1.0):
    judge_len, verdict_len = tokens(64, scale), tokens(16, scale)

    @sgl.function
    def llm_judge(s, question, answer):
        s += SYSTEM
        s += "Question: " + question + "\nAnswer: " + answer + "\n"
        forks = s.fork(len(DIMENSIONS))
        for f, dim in zip(forks, DIMENSIONS):
            f += "Judgment on " + dim + ":" + sgl.gen("judgment", max_tokens=judge_len, temperature=0,
                                                       ignore_eos=True)
        judgments = [f["judgment"] for f in forks]
        s += "Judgments:\n"
        for dim, j in zip(DIMENSIONS, judgments):
            s += "- " + dim + ":" + j + "\n"
        s += "Verdict:" + sgl.gen("verdict", max_tokens=verdict_len, temperature=0, ignore_eos=True)
        return s["verdict"]  # depends on every judgment (merged above)

    return llm_judge


def rows(n: int) -> list:
    return [{"question": f"({i}) " + QUESTIONS[i % len(QUESTIONS)], "answer": ANSWERS[i % len(ANSWERS)]}
            for i in range(n)]
