"""Host cost of admitting a shared-prefix workload, radix cache on vs off, with the model taken out.

    PYTHONPATH=. python benchmarks/bench_admission.py --groups 64 --per-group 16 --system-len 2048 \
        --question-len 128 --output-len 64 --arrive-per-step 16

The generated-shared-prefix workload of bench_serving (groups x per-group prompts, a random system prompt per
group plus a random question, arrivals shuffled) runs through the real Scheduler on bench_host_loop's null
runner (a free forward), so what is measured is the scheduler's own work: admission (radix matching, the
in-batch prefix rule, lock/evict bookkeeping), batch building, sampling bookkeeping and outputs. Requests
arrive `--arrive-per-step` at a time (0: all queued before the first step, as at rate inf). Reports, per
arm: steps and EXTEND rounds until every request has its first token, host CPU seconds in all (thread
time), and the slowest single step. Issue 17 used it to look for a host-side cause of the H200's one-time
shared-prefix stall (run 6): none showed up (a few seconds of host work in all, no step over ~0.3 s).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_host_loop import FIRST_TEXT_ID, NullRunner  # noqa: E402


def workload(groups: int, per_group: int, system_len: int, question_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prompts = []
    for _ in range(groups):
        system = [rng.randrange(FIRST_TEXT_ID, 30000) for _ in range(system_len)]
        prompts += [system + [rng.randrange(FIRST_TEXT_ID, 30000) for _ in range(question_len)]
                    for _ in range(per_group)]
    rng.shuffle(prompts)
    return prompts


def run(prompts: list[list[int]], output_len: int, radix: bool, arrive_per_step: int, tokenizer: Any,
        **server_kw: Any) -> dict[str, float]:
    from sglang.runtime.sampling.sampling_params import SamplingParams
    from sglang.runtime.scheduler.req import TokenizedRequest
    from sglang.runtime.scheduler.scheduler import Scheduler
    from sglang.runtime.server_args import ServerArgs

    n = len(prompts)
    runner = NullRunner(n, max(map(len, prompts)) + output_len + 8)
    args = ServerArgs(device="cpu", disable_radix_cache=not radix, max_running_requests=n, **server_kw)
    first: dict[str, int] = {}
    step = 0
    sched = Scheduler(args, runner, tokenizer, lambda rid, out, fin: first.setdefault(rid, step), detokenize=False)
    pending = [TokenizedRequest(rid=f"r{i}", input_ids=p, stream=True, sampling_params=SamplingParams(
        max_new_tokens=output_len, temperature=0.0, ignore_eos=True)) for i, p in enumerate(prompts)]
    per = arrive_per_step or n
    host = worst = 0.0
    first_all = None
    while pending or sched.has_work():
        for t in pending[:per]:
            sched.submit(t)
        del pending[:per]
        sched.drain_inbox(block=False)
        t0 = time.thread_time()
        sched.step()
        dt = time.thread_time() - t0
        host, worst, step = host + dt, max(worst, dt), step + 1
        if first_all is None and len(first) == n:
            first_all = (step, sched.counters["forward_extend"], host)
    steps_first, extends_first, host_first = first_all
    return {"radix": radix, "steps": step, "steps_to_all_first_tokens": steps_first,
            "extend_rounds_to_all_first_tokens": extends_first, "host_s": host,
            "host_s_to_all_first_tokens": host_first, "worst_step_ms": worst * 1e3}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=64)
    p.add_argument("--per-group", type=int, default=16)
    p.add_argument("--system-len", type=int, default=2048)
    p.add_argument("--question-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--arrive-per-step", type=int, default=0, help="0: everything queued before the first step")
    p.add_argument("--max-prefill-tokens", type=int, default=16384)
    p.add_argument("--chunked-prefill-size", type=int, default=8192)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from sglang.runtime.model_loader import resolve_model_path
    from sglang.runtime.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(resolve_model_path("default"))
    prompts = workload(args.groups, args.per_group, args.system_len, args.question_len)
    results = []
    for radix in (True, False):
        res = run(prompts, args.output_len, radix, args.arrive_per_step, tokenizer,
                  max_prefill_tokens=args.max_prefill_tokens, chunked_prefill_size=args.chunked_prefill_size)
        print(f"radix {'on ' if radix else 'off'}: first tokens of all {len(prompts)} after "
              f"{res['steps_to_all_first_tokens']} steps ({res['extend_rounds_to_all_first_tokens']} EXTEND rounds, "
              f"{res['host_s_to_all_first_tokens']:.2f} s host); all done after {res['steps']} steps, "
              f"{res['host_s']:.2f} s host; slowest step {res['worst_step_ms']:.0f} ms")
        results.append(res)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
