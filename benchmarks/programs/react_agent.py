"""ReAct-style agent: thought, an action picked by select, Python control flow on the generated action
(stop at Finish), a tool run in Python on the generated argument, its observation appended; 3 steps at
most, then an answer. Not traceable as a whole: the loop's exit depends on a generated value."""
import sglang as sgl

from . import tokens

NAME = "react_agent"
STEPS = 3
ACTIONS = (" Search", " Lookup", " Finish")
FACTS = ("The Eiffel Tower is 330 metres tall.", "Mount Everest is 8849 metres high.",
         "The Nile is about 6650 km long.", "Light travels 300000 km per second.",
         "The Pacific is the largest ocean.")
QUESTIONS = ("How tall is the Eiffel Tower?", "How high is Mount Everest?", "How long is the Nile?",
             "How fast is light?", "Which ocean is the largest?")
PROMPT = ("Answer the question by thinking step by step. Each step has a Thought, then an Action: Search "
          "[query], Lookup [term] or Finish.\n")


def tool(action: str, argument: str) -> str:
    """A deterministic stand-in for a search tool: the observation depends on the generated argument."""
    key = sum(map(ord, action + argument))
    return FACTS[key % len(FACTS)]


def build(scale: float = 1.0):
    thought_len, arg_len, answer_len = tokens(24, scale), tokens(8, scale), tokens(16, scale)

    @sgl.function
    def react_agent(s, question):
        s += PROMPT + "Question: " + question + "\n"
        for k in range(STEPS):
            s += "Thought " + str(k + 1) + ":" + sgl.gen("thought_" + str(k), max_tokens=thought_len, temperature=0,
                                                          ignore_eos=True)
            s += "\nAction " + str(k + 1) + ":" + sgl.select("action_" + str(k), choices=list(ACTIONS))
            action = s["action_" + str(k)]
            if action == " Finish":
                break
            s += " [" + sgl.gen("arg_" + str(k), max_tokens=arg_len, temperature=0, ignore_eos=True) + "]\n"
            s += "Observation " + str(k + 1) + ": " + tool(action, s["arg_" + str(k)]) + "\n"
        s += "\nAnswer:" + sgl.gen("answer", max_tokens=answer_len, temperature=0, ignore_eos=True)
        return s["answer"]  # depends on every step

    return react_agent


def rows(n: int) -> list:
    return [{"question": f"({i}) " + QUESTIONS[i % len(QUESTIONS)]} for i in range(n)]
