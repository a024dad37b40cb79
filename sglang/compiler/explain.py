"""`sglc compile --explain`: per pass, where it fired (file:line:col), why, and the cost model's predicted
saving per run; the places it looked at and left alone are listed with the reason.
"""
from __future__ import annotations

from typing import Any

from sglang.compiler.cost import CostModel
from sglang.compiler.passes import PASS_ORDER, Decision

ONCE = ("constrained-precompile",)  # passes whose saving is paid once per process, not per run


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.3f} ms"


def _line(d: Decision) -> str:
    where = str(d.loc) if d.loc is not None else d.function
    node = f"node {d.node}" if d.node is not None else ""
    if d.applied:
        saving = f"saves {_ms(d.saving_s)}" if d.saving_s > 0 else "saves    0 ms   "
        return f"  {where:<24} {node:<8} {saving}  {d.what}" + (f" ({d.why})" if d.why else "")
    return f"  {where:<24} {node:<8} {'not applied':<17}  {d.what}: predicted saving {d.saving_s * 1e3:.3f} ms" + \
        (f" ({d.why})" if d.why else "")


def format_explain(decisions: list[Decision], cost: CostModel, passes: list[str]) -> str:
    cal = cost.cal
    out = [f"# cost model: {cal.source} (device {cal.device}: prefill {cal.prefill_token_s * 1e6:.1f} us/token, "
           f"decode {cal.decode_token_s * 1e3:.2f} ms/token, {cal.call_overhead_s * 1e3:.2f} ms/call); "
           f"predictions per run of {cost.batch} item(s)"]
    total = once = 0.0
    for name in PASS_ORDER:
        mine = [d for d in decisions if d.pass_name == name]
        state = "" if name in passes else " (off)"
        fired = sum(d.applied for d in mine)
        out.append(f"{name}{state}: fired {fired} time(s)" + (f", looked at {len(mine) - fired} more" if
                                                               len(mine) > fired else ""))
        out += [_line(d) for d in mine]
        saved = sum(d.saving_s for d in mine if d.applied and d.saving_s > 0)
        if name in ONCE:
            once += saved
        else:
            total += saved
    out.append(f"total predicted saving: {total * 1e3:.3f} ms per run" +
               (f", and {once * 1e3:.3f} ms once, at the first request" if once else ""))
    return "\n".join(out) + "\n"


def explain_json(decisions: list[Decision]) -> list[dict[str, Any]]:
    return [{"pass": d.pass_name, "function": d.function, "node": d.node, "loc": str(d.loc) if d.loc else None,
             "what": d.what, "saving_s": d.saving_s, "applied": d.applied, "why": d.why} for d in decisions]
