"""Host cost of one scheduler step, with the model taken out: a null runner whose forward is free.

    PYTHONPATH=. python benchmarks/bench_host_loop.py --rows 256 --steps 200
    PYTHONPATH=. python benchmarks/bench_host_loop.py --rows 256 --profile   # cProfile, top functions

Everything the scheduler does per step around the forward (admission checks, batch building, the
sampling tensors, sampling itself on a tiny vocab, appending tokens, stop checks, detokenization with
the real SmolLM2 tokenizer, outputs) runs as in serving; the forward returns precomputed logits whose
argmax walks through ordinary text tokens. `rows` requests decode together; prompts are short and
max_new_tokens long enough that the running batch stays full for the timed steps. Reports mean host
CPU microseconds per decode step (thread CPU time, so other load on the machine does not count) (the number issue 17 wants under the GPU's ~2.5 ms at 256 rows).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from types import SimpleNamespace
from typing import Any

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


def build(rows: int, steps: int, prompt_len: int, stop: list[str], stream: bool) -> Any:
    from sglang.runtime.model_loader import resolve_model_path
    from sglang.runtime.sampling.sampling_params import SamplingParams
    from sglang.runtime.scheduler.req import TokenizedRequest
    from sglang.runtime.scheduler.scheduler import Scheduler
    from sglang.runtime.server_args import ServerArgs
    from sglang.runtime.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(resolve_model_path("default"))
    runner = NullRunner(rows, prompt_len + steps + 64)
    args = ServerArgs(device="cpu", max_running_requests=rows, disable_radix_cache=True)
    sched = Scheduler(args, runner, tokenizer, lambda rid, out, fin: None)
    for i in range(rows):
        sp = SamplingParams(max_new_tokens=steps + 32, temperature=0.0, ignore_eos=True, stop=stop)
        prompt = [FIRST_TEXT_ID + (i * 31 + j) % 1000 for j in range(prompt_len)]
        sched.submit(TokenizedRequest(rid=f"r{i}", input_ids=prompt, sampling_params=sp, stream=stream))
    sched.drain_inbox(block=False)
    while sched.prefill.has_work():  # prefill everyone; the timed part is decode only
        sched.step()
    return sched


def run(rows: int, steps: int, prompt_len: int, stop: list[str], stream: bool, profile: bool) -> dict[str, float]:
    sched = build(rows, steps, prompt_len, stop, stream)
    for _ in range(3):  # warm up caches (sampling tensors, detokenizer tables)
        sched.step()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    # CPU time of this thread, not wall time: the number must not depend on what else the machine runs
    start = time.thread_time()
    for _ in range(steps):
        sched.step()
    elapsed = time.thread_time() - start
    if prof:
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(35)
    assert len(sched.decode.running) == rows, "the batch must stay full while timed"
    return {"rows": rows, "steps": steps, "host_us_per_step": elapsed / steps * 1e6}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--stop", nargs="*", default=[], help="stop strings every request carries")
    p.add_argument("--stream", action="store_true", help="every request streams (an output per token)")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = run(args.rows, args.steps, args.prompt_len, args.stop, args.stream, args.profile)
    print(f"{res['rows']} rows: {res['host_us_per_step']:.0f} us host per decode step "
          f"({res['host_us_per_step'] / res['rows']:.2f} us/row)")
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
