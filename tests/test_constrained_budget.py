"""Compile budgets (budget.py): a constraint whose automaton would need gigabytes is refused with a clear
CompileBudgetError, in bounded memory, through every entry point a request can reach."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sglang.runtime.constrained import (CompileBudgetError, ConstraintCache, ConstraintError, TokenVocab,
                                        compile_with_budget, regex_to_dfa)
from sglang.runtime.constrained.budget import CompileBudget, budget_scope

BOMB = "((a{0,50}){0,50}){0,50}"  # issue 13: grew the HTTP process to 18 GB before this budget


def test_bomb_is_refused_in_bounded_memory_through_every_entry_point() -> None:
    # a child with a 2.5 GiB address-space cap and a CPU-time cap: without the budget the compile dies
    # of MemoryError (or is killed), never taking the shared machine down
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (5 << 29, 5 << 29))
        resource.setrlimit(resource.RLIMIT_CPU, (240, 240))
        from sglang.runtime.constrained import (CompileBudgetError, build_constraint_from_sampling_params,
                                                response_format_to_constraint)
        from sglang.runtime.constrained.budget import DEFAULT_MEM_BYTES, CompileBudget, budget_scope
        calls = [lambda: build_constraint_from_sampling_params({{"regex": {BOMB!r}}}),
                 lambda: response_format_to_constraint({{"type": "regex", "regex": {BOMB!r}}})]
        for call in calls:
            # the entry points' memory budget, without their wall-clock one: on a loaded machine the clock ran
            # out first and the test failed for the wrong reason (the CPU rlimit above still bounds the child)
            try:
                with budget_scope(CompileBudget(DEFAULT_MEM_BYTES, None)):
                    call()
            except CompileBudgetError as exc:
                print("REFUSED", exc)
        print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    refused = [line for line in out.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 2, out.stdout
    for line in refused:
        assert BOMB in line and "memory budget" in line  # names the pattern and the budget
    assert "sampling_params.regex" in refused[0]


def test_time_budget_stops_a_long_compile() -> None:
    with pytest.raises(CompileBudgetError, match="time budget of 0 s"):
        compile_with_budget("[a-z]{1,3000}", time_s=0.0)


def test_memory_budget_is_checked_while_building() -> None:
    with pytest.raises(CompileBudgetError, match=r"memory budget of 1 MiB"):
        compile_with_budget("[a-z]{1,3000}", mem_bytes=1 << 20)
    assert compile_with_budget("[a-z]{1,3000}").fullmatch(b"abc")  # the default budget lets it through


def test_token_table_bytes_count_against_the_budget(tmp_path) -> None:
    vocab = TokenVocab.from_tokens([b"<eos>"] + [bytes([c]) for c in range(97, 123)] * 2000, eos_token_ids=[0])
    cache = ConstraintCache(cache_dir=tmp_path)
    pattern = "[a-z]{1,200}"  # a small DFA (~200 states) whose table is 200 x 52k bits = 1.3 MB
    with pytest.raises(CompileBudgetError, match="memory budget"):
        compile_with_budget(pattern, vocab, mem_bytes=1 << 20, cache=cache)
    assert not list(tmp_path.glob("*.fsm"))  # refused before anything was written
    fsm = compile_with_budget(pattern, vocab, cache=cache)
    assert fsm.pattern == pattern


def test_nested_entry_points_share_the_callers_budget() -> None:
    # the admission helpers reuse an active budget rather than resetting it (one limit per request)
    with budget_scope(CompileBudget(mem_bytes=1 << 20)):
        with pytest.raises(ConstraintError, match="sampling_params.regex: .*memory budget"):
            from sglang.runtime.constrained import build_constraint_from_sampling_params

            build_constraint_from_sampling_params({"regex": "[a-z]{1,3000}"})
    assert regex_to_dfa("[a-z]{1,3000}").num_states > 3000  # outside the scope: the default applies
