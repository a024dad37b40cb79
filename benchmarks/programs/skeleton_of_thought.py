"""Skeleton of thought: a short outline, then every point expanded in parallel (a fork), then merged and summed up in one line."""
import sglang as sgl

from . import tokens

NAME = "skeleton_of_thought"
POINTS = 3
TOPICS = ("How to learn a new language", "How to start running", "How to save money on groceries",
          "How to write a good email", "How to grow tomatoes", "How to prepare for an interview",
          "How to keep a houseplant alive", "How to plan a trip")


def build(scale: float = 1.0):
    skeleton_len, point_len, summary_len = tokens(32, scale), tokens(48, scale), tokens(16, scale)

    @sgl.function
    def skeleton_of_thought(s, topic):
        s += "Question: " + topic + "?\nFirst write a skeleton of " + str(POINTS) + " short points.\nSkeleton:"
        s += sgl.gen("skeleton", max_tokens=skeleton_len, temperature=0, ignore_eos=True)
        forks = s.fork(POINTS)
        for i, f in enumerate(forks):
            f += "\nNow expand point " + str(i + 1) + " in two sentences:" + sgl.gen(
                "point", max_tokens=point_len, temperature=0, ignore_eos=True)
        points = [f["point"] for f in forks]
        s += "\nAnswer:"
        for p in points:
            s += p
        s += "\nIn one line:" + sgl.gen("summary", max_tokens=summary_len, temperature=0, ignore_eos=True)
        return s["summary"]  # depends on the skeleton and every point

    return skeleton_of_thought


def rows(n: int) -> list:
    return [{"topic": TOPICS[i % len(TOPICS)] + (f" (case {i})" if i >= len(TOPICS) else "")} for i in range(n)]
