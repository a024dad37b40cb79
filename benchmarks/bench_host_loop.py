"""Host cost of one scheduler step, with the model taken out: a null runner whose forward is free.

    PYTHONPATH=. python benchmarks/bench_host_loop.py --rows 256 --steps 200
    PYTHONPATH=. python benchmarks/bench_host_loop.py --rows 256 --profile   # cProfile, top functions

Everything the scheduler does per step around the forward (admission checks, batch building, the
sampling tensors, sampling itself on a tiny vocab, appending tokens, stop checks, detokenization with
the real SmolLM2 tokenizer, outputs) runs as in serving; the forward returns precomputed logits whose
argmax walks through ordinary text tokens. `rows` requests decode together; prompts are short and
max_new_tokens long enough that the running batch stays full for the timed steps. Reports mean host
CPU microseconds per decode step (thread CPU time, so other load on the machine does not count): the
number issue 17 wants under the GPU's ~2.5 ms at 256 rows.

--text both (default) runs two arms in one call: the scheduler making every output's text (before issue 17)
and the engine's way, where plain requests' outputs carry ids and the consumer makes the text (its cost is
reported apart: it runs in the caller's thread, not the scheduler's).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from types import SimpleNamespace
from typing import Any, Optional

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 512  # small: the sampler's arithmetic over the vocab is the device's business, not the host's
FIRST_TEXT_ID = 17  # SmolLM2: ids below are special tokens


class NullRunner:
    """Pools like a real runner, a forward that only fills the logits (argmax = a text token)."""

    def __init__(self, rows: int, context_len: int) -> None:
        from sglang.runtime.mem_cache.memory_pool import ReqToTokenPool, TokenKVPool

        self.device = torch.device("cpu")
        self.model_config = SimpleNamespace(vocab_size=VOCAB, context_len=context_len, eos_token_ids=(0,))
        self.req_to_token_pool = ReqToTokenPool(rows + 2, context_len, "cpu")
        self.token_kv_pool = TokenKVPool((rows + 2) * context_len, 1, 1, 2, torch.float32, "cpu")
        self.steps = 0

    def forward(self, batch: Any) -> Any:
        bs = batch.batch_size
        logits = torch.zeros(bs, VOCAB)
        # a different text token per row and step, so detokenization sees varied ids
        ids = (torch.arange(bs) * 7 + self.steps * 13) % (VOCAB - FIRST_TEXT_ID) + FIRST_TEXT_ID
        logits[torch.arange(bs), ids] = 10.0
        self.steps += 1
        return SimpleNamespace(next_token_logits=logits, input_token_logprobs=None, input_top_logprobs=None)


def build(rows: int, steps: int, prompt_len: int, stop: list[str], stream: bool, detokenize: bool = True,
          outputs: Optional[list] = None) -> Any:
    """detokenize=False: as the engine runs its scheduler (plain requests' outputs carry ids, the consumer
    makes the text); `outputs` then collects (rid, out) for the consumer's side."""
    from sglang.runtime.model_loader import resolve_model_path
    from sglang.runtime.sampling.sampling_params import SamplingParams
    from sglang.runtime.scheduler.req import TokenizedRequest
    from sglang.runtime.scheduler.scheduler import Scheduler
    from sglang.runtime.server_args import ServerArgs
    from sglang.runtime.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(resolve_model_path("default"))
    runner = NullRunner(rows, prompt_len + steps + 64)
    args = ServerArgs(device="cpu", max_running_requests=rows, disable_radix_cache=True)
    keep = (lambda rid, out, fin: outputs.append((rid, out))) if outputs is not None else (lambda rid, out, fin: None)
    sched = Scheduler(args, runner, tokenizer, keep, detokenize)
    sched.bench_prompts = {}  # rid -> (params, prompt ids), for the consumer's ClientText
    for i in range(rows):
        sp = SamplingParams(max_new_tokens=steps + 32, temperature=0.0, ignore_eos=True, stop=stop)
        prompt = [FIRST_TEXT_ID + (i * 31 + j) % 1000 for j in range(prompt_len)]
        sched.bench_prompts[f"r{i}"] = (sp, prompt)
        sched.submit(TokenizedRequest(rid=f"r{i}", input_ids=prompt, sampling_params=sp, stream=stream))
    sched.drain_inbox(block=False)
    while sched.prefill.has_work():  # prefill everyone; the timed part is decode only
        sched.step()
    return sched


def run(rows: int, steps: int, prompt_len: int, stop: list[str], stream: bool, profile: bool,
        detokenize: bool = True) -> dict[str, float]:
    outputs: Optional[list] = None if detokenize else []
    sched = build(rows, steps, prompt_len, stop, stream, detokenize, outputs)
    consume = _consumer(sched, outputs)
    for _ in range(3):  # warm up caches (sampling tensors, detokenizer tables)
        sched.step()
        consume()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    # CPU time of this thread, not wall time: the number must not depend on what else the machine runs;
    # the consumer's share (client text) is timed apart, as it runs in other threads in the engine
    host = consumer = 0.0
    for _ in range(steps):
        t0 = time.thread_time()
        sched.step()
        t1 = time.thread_time()
        consume()
        host, consumer = host + t1 - t0, consumer + time.thread_time() - t1
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(35)
    assert len(sched.decode.running) == rows, "the batch must stay full while timed"
    res = {"rows": rows, "steps": steps, "host_us_per_step": host / steps * 1e6}
    if outputs is not None:
        res["consumer_us_per_step"] = consumer / steps * 1e6
    return res


def _consumer(sched: Any, outputs: Optional[list]) -> Any:
    """What the engine's caller threads do with a step's outputs: make the text from the handed-off ids."""
    if outputs is None:
        return lambda: None
    from sglang.runtime.detokenizer import ClientText

    texts = {rid: ClientText(sched.tokenizer, *sched.bench_prompts[rid]) for rid in sched.bench_prompts}

    def consume() -> None:
        for rid, out in outputs:
            texts[rid].fill(out)
        outputs.clear()

    return consume


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--stop", nargs="*", default=[], help="stop strings every request carries")
    p.add_argument("--stream", action="store_true", help="every request streams (an output per token)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--text", choices=["scheduler", "client", "both"], default="both",
                   help="who makes plain requests' text: the scheduler (before issue 17), the consumer (the "
                        "engine's schedulers: outputs carry ids), or both arms in one run")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    arms = {"scheduler": [True], "client": [False], "both": [True, False]}[args.text]
    results = {}
    for detok in arms:
        res = run(args.rows, args.steps, args.prompt_len, args.stop, args.stream, args.profile, detok)
        name = "scheduler text" if detok else "client text"
        extra = f"; consumer {res['consumer_us_per_step']:.0f} us per step" if "consumer_us_per_step" in res else ""
        print(f"{res['rows']} rows, {name}: {res['host_us_per_step']:.0f} us host per decode step "
              f"({res['host_us_per_step'] / res['rows']:.2f} us/row){extra}")
        results[name] = res
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
