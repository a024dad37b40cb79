"""stop_regex in linear time (constrained/stop_regex.py through detokenizer.StopChecker)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sglang.runtime.constrained import RegexSyntaxError
from sglang.runtime.detokenizer import StopChecker


def test_catastrophic_pattern_does_not_stall_generation() -> None:
    # issue 13: `re.search` backtracks exponentially on this pattern over each window of text; the child
    # gets a CPU-time cap (the hang guard) and must finish the stream and stop on the NUL
    code = textwrap.dedent(r"""
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from sglang.runtime.detokenizer import StopChecker
        sc = StopChecker((), stop_regex=["(.*.*)*\u0000"])
        outs = [sc.feed("token%d " % i) for i in range(2000)]
        assert all(m is None for _, m in outs)
        print("END", sc.feed("x\u0000y"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "END ('', '(.*.*)*\\x00')" in out.stdout


def test_match_ends_as_early_as_possible_and_spans_deltas() -> None:
    sc = StopChecker((), stop_regex=[r"ab+c"])
    assert sc.feed("xxa") == ("xxa", None)
    assert sc.feed("bb") == ("bb", None)
    assert sc.feed("cbbc tail") == ("", r"ab+c")  # the match started in streamed text: nothing more
    sc = StopChecker(("zz",), stop_regex=[r"[0-9]{2}"])
    assert sc.feed("a12zz") == ("a", r"[0-9]{2}")  # ends before the stop string does


def test_pattern_matching_only_empty_never_stops() -> None:
    sc = StopChecker((), stop_regex=["a*"])
    assert sc.feed("bbb") == ("bbb", None)  # as with re.search: an empty match is no stop
    assert sc.feed("baab") == ("b", "a*")


def test_unarmed_text_still_advances_the_automaton() -> None:
    sc = StopChecker((), stop_regex=["xy"])
    assert sc.feed("ax", armed=False) == ("ax", None)
    assert sc.feed("yz") == ("", "xy")


def test_unsupported_construct_is_a_clear_error() -> None:
    with pytest.raises(RegexSyntaxError, match="look-ahead"):
        StopChecker((), stop_regex=["a(?=b)"])
    with pytest.raises(ValueError, match="position"):
        StopChecker((), stop_regex=["(("])
