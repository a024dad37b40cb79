"""Tree of thought (nested forks): 3 plans, each executed 2 ways in a nested fork, the executions merged
into their plan and the plans into the root, then a final answer."""
import sglang as sgl

from . import tokens

NAME = "tree_of_thought"
PLANS, EXECUTIONS = 3, 2
PUZZLES = ("How many ways can 4 people sit at a round table?", "What is the sum of the first 20 odd numbers?",
           "A train leaves at 9 and travels 240 km at 80 km/h. When does it arrive?",
           "How many squares are on a chess board, of every size?", "What is 17 times 23?",
           "How many handshakes happen when 6 people all shake hands once?",
           "What is the next number: 2, 6, 12, 20, 30?", "How many days are in 3 leap years and 2 common years?")


def build(scale: float = 1.0):
    plan_len, exec_len, answer_len = tokens(24, scale), tokens(24, scale), tokens(16, scale)

    @sgl.function
    def tree_of_thought(s, puzzle):
        s += "Solve the puzzle by trying several plans.\nPuzzle: " + puzzle + "\n"
        plans = s.fork(PLANS)
        results = []
        for i, p in enumerate(plans):
            p += "Plan " + str(i + 1) + ":" + sgl.gen("plan", max_tokens=plan_len, temperature=0, ignore_eos=True)
            execs = p.fork(EXECUTIONS)
            for j, e in enumerate(execs):
                e += "\nExecution " + str(j + 1) + ":" + sgl.gen("run", max_tokens=exec_len, temperature=0,
                                                                  ignore_eos=True)
            runs = [e["run"] for e in execs]
            results.append([p["plan"]] + runs)
        for i, r in enumerate(results):
            s += "Plan " + str(i + 1) + ":" + r[0] + "\nResult:" + r[1] + "\n"
        s += "Final answer:" + sgl.gen("answer", max_tokens=answer_len, temperature=0, ignore_eos=True)
        return s["answer"]  # depends on every plan and run

    return tree_of_thought


def rows(n: int) -> list:
    return [{"puzzle": f"({i}) " + PUZZLES[i % len(PUZZLES)]} for i in range(n)]
