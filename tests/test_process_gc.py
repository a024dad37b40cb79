"""runtime/process.py: settle_gc, run in a child interpreter (its effects are process-wide)."""
from __future__ import annotations


def test_settle_gc_freezes_what_is_alive_and_reports_long_pauses():
    """In a child interpreter (gc.freeze and gc.callbacks are process-wide): after settle_gc the objects
    alive so far are frozen (a full collection no longer walks them), and a collection longer than the
    threshold (0 here) is logged with its generation."""
    import subprocess
    import sys

    code = (
        "import gc, logging\n"
        "from sglang.runtime import process\n"
        "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
        "keep = [[i] for i in range(1000)]\n"
        "process.LONG_GC_PAUSE_S = 0.0\n"
        "process.settle_gc('child')\n"
        "print('frozen', gc.get_freeze_count() >= 1000, flush=True)\n"
        "gc.collect(2)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "frozen True" in out.stdout
    assert "child: garbage collection of generation 2 paused" in out.stderr
