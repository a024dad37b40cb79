"""Summarize a py-spy raw profile (`py-spy record -f raw --threads`): per thread, the functions with
the most samples, inclusive (anywhere on the stack) and exclusive (on top).

    python benchmarks/pyspy_summary.py gpu_out/offline_b1.pyspy --top 30 [--thread scheduler]
"""
from __future__ import annotations

import argparse
from collections import Counter


def summarize(path: str, top: int, thread_filter: str | None) -> str:
    inclusive: dict[str, Counter] = {}
    exclusive: dict[str, Counter] = {}
    totals: Counter = Counter()
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            pid = ""
            while len(frames) > 1 and frames[0].startswith("process "):  # --subprocesses: process;..;thread;..
                pid, frames = frames[0].split(":")[0], frames[1:]
            if pid:
                frames = [f"{pid} {frames[0]}"] + frames[1:]
            thread = frames[0]
            if thread_filter and thread_filter not in thread:
                continue
            n = int(count)
            totals[thread] += n
            inc = inclusive.setdefault(thread, Counter())
            for name in {fr.split(" (")[0] for fr in frames[1:]}:
                inc[name] += n
            exclusive.setdefault(thread, Counter())[frames[-1]] += n
    lines = []
    for thread, total in totals.most_common():
        lines.append(f"== {thread}: {total} samples")
        lines.append("  inclusive:")
        lines += [f"  {c:>7} {100 * c / total:5.1f}%  {name[:110]}" for name, c in inclusive[thread].most_common(top)]
        lines.append("  exclusive:")
        lines += [f"  {c:>7} {100 * c / total:5.1f}%  {name[:140]}" for name, c in exclusive[thread].most_common(top)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default=None, help="only threads whose name contains this")
    a = p.parse_args()
    print(summarize(a.path, a.top, a.thread))


if __name__ == "__main__":
    main()
