"""The select protocol (`lang.backends.choices.score_choices`), shared by the interpreter and the plan
executor: the prompt prefilled once, then one batch of `prompt + choice` scored from 2 tokens before the
prompt's end, without the bare prompt unless a choice merges with the prompt's end. Unit tests drive it
with a fake tokenizer that merges; the last tests run a few-shot select on the real default model and
count the engine's calls and computed prefill tokens."""
from __future__ import annotations

import pytest

import sglang as sgl
from sglang.lang.backends.choices import agreed_prompt_ids, merge_likely, run_scoring, score_choices

MERGES = {"ab": 1000, " y": 1001, " n": 1002}  # two-character tokens; every other character is its own token


def tokenize(text: str) -> list[int]:
    ids, i = [], 0
    while i < len(text):
        if text[i:i + 2] in MERGES:
            ids.append(MERGES[text[i:i + 2]])
            i += 2
        else:
            ids.append(ord(text[i]))
            i += 1
    return ids


class FakeServer:
    """Answers native request lists like the engine: prompt_tokens, and input logprobs from
    logprob_start_len (token t's logprob is -t/1000, position 0 has none)."""

    def __init__(self) -> None:
        self.calls: list[list[dict]] = []

    def __call__(self, reqs: list[dict]) -> list[dict]:
        self.calls.append(reqs)
        outs = []
        for r in reqs:
            ids = tokenize(r["text"])
            meta = {"prompt_tokens": len(ids)}
            if r.get("return_logprob"):
                start = r["logprob_start_len"]
                meta["input_token_logprobs"] = [[None if p == 0 else -ids[p] / 1000, ids[p], None]
                                                for p in range(start, len(ids))]
            outs.append({"text": "", "meta_info": meta})
        return outs


def score(prompt: str, choices: list[str]):
    server = FakeServer()
    index, meta = run_scoring(score_choices(prompt, choices, "token_length_normalized"), server)
    return index, meta, server.calls


def choice_ids(meta) -> list[list[int]]:
    return [[e[1] for e in es] for es in meta["input_token_logprobs"]]


def test_two_calls_and_no_bare_prompt_when_the_choices_agree_on_the_prompt_tokens():
    index, meta, calls = score("Q: xy:", [" yes", " no"])
    assert [len(c) for c in calls] == [1, 2]
    assert [r["text"] for r in calls[1]] == ["Q: xy: yes", "Q: xy: no"]  # no bare prompt
    assert all(r["logprob_start_len"] == len("Q: xy:") - 2 and r["sampling_params"]["max_new_tokens"] == 0
               for r in calls[1])
    assert choice_ids(meta) == [tokenize(" yes"), tokenize(" no")]
    assert index == 0  # " yes": mean(-1.001, -0.101, -0.115) = -0.406 beats " no": mean(-1.002, -0.111)


def test_a_prompt_ending_in_whitespace_sends_the_bare_prompt_in_the_same_batch():
    index, meta, calls = score("Q: ", ["yes", "no"])
    assert [len(c) for c in calls] == [1, 3]
    assert [r["text"] for r in calls[1]] == ["Q: ", "Q: yes", "Q: no"]
    assert choice_ids(meta) == [tokenize(" yes"), tokenize(" no")]  # the merged " y" / " n" are the choice's


def test_choices_that_disagree_on_a_prompt_position_get_the_bare_prompt_in_a_third_call():
    # "xa" + "b1" merges to [x][ab][1]; "xa" + "c1" stays [x][a][c][1]
    index, meta, calls = score("xa", ["b1", "c1"])
    assert [len(c) for c in calls] == [1, 2, 1]
    assert calls[2][0]["text"] == "xa" and calls[2][0]["logprob_start_len"] == 0
    assert choice_ids(meta) == [[MERGES["ab"], ord("1")], [ord("c"), ord("1")]]


def test_identical_merges_in_every_choice_count_as_prompt():
    index, meta, calls = score("xa", ["b1", "b2"])
    assert [len(c) for c in calls] == [1, 2]
    assert choice_ids(meta) == [[ord("1")], [ord("2")]]
    assert index == 0


def test_agreement_needs_a_token_after_the_prompt_positions():
    windows = [[[None, 5], [-1.0, 6], [-2.0, 7]], [[None, 5], [-1.0, 6], [-3.0, 8]]]
    assert agreed_prompt_ids(windows, 2) == [5, 6]
    assert agreed_prompt_ids([windows[0], windows[1][:2]], 2) is None  # a choice with no token of its own
    assert agreed_prompt_ids([windows[0], [[None, 5], [-1.0, 9], [-3.0, 8]]], 2) is None
    assert merge_likely("A: ", ["yes"]) and not merge_likely("A: ", [" yes"]) and not merge_likely("A:", ["yes"])


# --------------------------------------------------------------------------- the real default model

SHOTS = "".join(f"Context: item {k} is on the shelf\nEnding: and it stays there.\n\n" for k in range(6))
CHOICES = [" and it falls down.", " and it stays there.", " with a loud noise."]


@sgl.function
def few_shot(s, context):
    s += SHOTS
    s += "Context: " + context + "\nEnding:" + sgl.select("ending", choices=CHOICES)


class Recording:
    """An EngineBackend that records every native call and the engine's computed prefill tokens."""

    def __init__(self, engine):
        from sglang.lang.backends.engine_backend import EngineBackend

        calls = self.calls = []

        class Rec(EngineBackend):
            def _call(self, payload):
                calls.append(payload)
                return super()._call(payload)

        self.backend = Rec(engine)


def run_counted(engine, rows, warm: str = "", **kw):
    """Run `few_shot` on rows from an empty cache (holding only `warm`, if given): states, native calls, and
    the prefill tokens the engine computed for them."""
    assert engine.flush_cache() is not False
    if warm:
        engine.generate(text=warm, sampling_params={"max_new_tokens": 0})
    before = engine.stats()["prefill_tokens"]
    rec = Recording(engine)
    states = few_shot.run_batch(rows, backend=rec.backend, temperature=0, **kw)
    return states, rec.calls, engine.stats()["prefill_tokens"] - before


def _texts(payload):
    return payload["text"] if isinstance(payload["text"], list) else [payload["text"]]


@pytest.fixture(scope="module")
def engine(default_engine):
    return default_engine


def test_compiled_select_on_the_default_model(engine):
    rows = [{"context": f"item {k} is on the shelf"} for k in range(6, 10)]
    comp, calls, computed = run_counted(engine, rows)
    interp, icalls, icomputed = run_counted(engine, rows, compiled=False)
    for a, b in zip(interp, comp):  # greedy: the same decisions and scores on both paths
        assert a.error() is None and b.error() is None
        assert b["ending"] == a["ending"] and b.text() == a.text()
        assert b.get_meta_info("ending")["scores"] == pytest.approx(a.get_meta_info("ending")["scores"], abs=1e-4)
    # the prompts prefilled in one call, then every item's choices (and no bare prompt) scored in one call
    assert len(calls) == 2 and len(_texts(calls[0])) == len(rows) and len(icalls) > len(calls)
    prompts = _texts(calls[0])
    scored = _texts(calls[1])
    assert scored == [p + c for p in prompts for c in CHOICES]
    tok = engine.tokenizer
    starts = calls[1]["logprob_start_len"]
    starts = starts if isinstance(starts, list) else [starts] * len(scored)  # equal values travel once
    assert starts == [len(tok.encode(p)) - 2 for p in prompts for _ in CHOICES]
    # computed: the shared shots once, each item's own prompt tail, each choice from 3 tokens before the
    # prompt's end (logprob rows start 2 before it; the row before them is recomputed to produce them)
    shared = len(tok.encode(SHOTS))
    bound = shared + sum(len(tok.encode(p)) - shared for p in prompts)
    bound += sum(len(tok.encode(p + c)) - (len(tok.encode(p)) - 3) for p in prompts for c in CHOICES)
    assert computed <= bound and computed <= icomputed


def test_a_batch_of_selects_computes_no_more_than_the_items_one_by_one(engine):
    """The items' questions share a head (~16 tokens, under the old 32-token window) after the shots, which are
    cached (a previous batch's). Sent one by
    one (SGLang's frontend: each select's prompt prefill, then its choices), each item finds the earlier
    items' head in the cache; the compiled batch sends them all at once and must compute no more: the
    scheduler's in-batch rule makes the other items wait a round for the first one's head."""
    head = "the red kettle that whistles on the old kitchen stove near the window, number"
    rows = [{"context": f"{head} {k}"} for k in range(4)]
    comp, calls, computed = run_counted(engine, rows, warm=SHOTS)
    one_by_one, _, sequential = run_counted(engine, rows, warm=SHOTS, compiled=False, num_threads=1)
    assert [s["ending"] for s in comp] == [s["ending"] for s in one_by_one]
    assert len(calls) == 2 and computed <= sequential
