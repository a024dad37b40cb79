"""Traced Python programs compile ahead of time: `fn.trace()` -> the compiler's plan -> its executor
gives the same text and variables as the eager interpreter (deterministic scripted backend)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lang_fakes import ScriptedBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import quick_start  # noqa: E402
import regex_json  # noqa: E402
import roles  # noqa: E402
import tip_suggestion  # noqa: E402


@pytest.mark.parametrize("program,args", [
    (tip_suggestion.tip_suggestion, {}),
    (quick_start.multi_turn_question, {"question_1": "What is 2+2?", "question_2": "And 3+3?"}),
    (roles.chat_example, {}),
    (regex_json.character_gen, {"name": "Harry"}),
])
def test_traced_program_compiled_by_the_compiler_matches_eager_run(program, args):
    from sglang.compiler.executor import PlanExecutor
    from sglang.compiler.lower import plan_for_ir

    eager = program.run(**args, backend=ScriptedBackend())
    compiled = PlanExecutor(plan_for_ir(program.trace()), ScriptedBackend()).run(None, args)
    assert "error" not in compiled, compiled.get("error")
    assert compiled["text"] == eager.text()
    for name, value in compiled["variables"].items():
        assert eager[name] == value
