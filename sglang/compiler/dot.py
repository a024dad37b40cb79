"""`sglc compile --emit dot|svg`: a picture of an optimized IR function that a person can read.

* regions are boxes (graphviz clusters): each arm of a branch (labelled with its condition), each branch of
  a fork, a loop's body, and the leading constant prefix the batch shares (prefix-hoist);
* ops are shaped by what they do: text as notes, model calls (gen, select) as filled ellipses / hexagons,
  branches as diamonds, forks and joins as trapezia, return as a double octagon;
* waves: every model call is labelled with its wave, the number of sequential model round trips on its
  path up to and including it (fork branches run side by side, so sibling calls share a wave); calls of
  one wave have one colour, since the executor can send them in one batch;
* pass decisions show: a fork whose parent is warmed up once, a select scored in one batched call;
* program order is solid, the control flow back out of a region dashed, data (a variable read) dotted blue.

`render_svg(dot)` runs graphviz's `dot` when it is on PATH.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Any

from sglang.lang import ir
from sglang.lang.ir.expr import expr_to_str, names_in

PALETTE = ("#cfe8ff", "#ffe0b3", "#d5f5d5", "#f3d1f5", "#fff3b0", "#d0f0f0", "#ffd1d1", "#e0e0ff")
MAX_LABEL = 40


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(s: str) -> str:
    s = s.replace("\n", "⏎")
    return s if len(s) <= MAX_LABEL else s[:MAX_LABEL - 1] + "…"


def waves(fn: ir.IRFunction) -> dict[int, int]:
    """node -> its wave, for gens and selects (see the module docstring)."""
    out: dict[int, int] = {}
    fork_end: dict[tuple[int, int], int] = {}  # (fork node, branch) -> wave its branch ends at

    def reads_wave(op: Any) -> int:
        forks = [(n.fork, n.branch or 0) for e in ir.op_exprs(op) for n in names_in(e) if n.fork is not None]
        if isinstance(op, ir.VarRef) and op.fork is not None:
            forks.append((op.fork, op.branch or 0))
        return max((fork_end.get(f, 0) for f in forks), default=0)

    def region(parent: int | None, arm: int, wave: int) -> int:
        for node in fn.region(parent, arm):
            op = fn.op(node)
            wave = max(wave, reads_wave(op))  # reading a branch's variable waits for that branch
            if isinstance(op, (ir.Gen, ir.Select)):
                wave += 1
                out[node] = wave
            elif isinstance(op, (ir.Branch, ir.Loop)):
                wave = max([region(node, a, wave) for a in range(ir.num_arms(op))] + [wave])
            elif isinstance(op, ir.Fork):
                for a in range(ir.num_arms(op)):
                    fork_end[(node, a)] = region(node, a, wave)
            elif isinstance(op, ir.Join):
                wave = max([w for (f, _), w in fork_end.items() if f == op.fork] + [wave])
        return wave

    region(None, 0, 0)
    return out


class _Dot:
    def __init__(self, fn: ir.IRFunction) -> None:
        self.fn = fn
        self.waves = waves(fn)
        self.forks = fn.attrs.get("fork_batching", {})
        self.selects = set(fn.attrs.get("select_batched", []))
        self.lines: list[str] = []

    def node(self, n: int, indent: str) -> None:
        op, loc = self.fn.op(n), self.fn.loc_of(n)
        tip = f", tooltip={_q(str(loc))}" if loc else ""
        shape, label, style = self.look(n, op)
        self.lines.append(f"{indent}n{n} [shape={shape}, label={_q(label)}{style}{tip}];")

    def look(self, n: int, op: Any) -> tuple[str, str, str]:
        wave = self.waves.get(n)
        fill = f', style="filled,bold", fillcolor="{PALETTE[(wave - 1) % len(PALETTE)]}"' if wave else ""
        if isinstance(op, ir.Text):
            return "note", _short(repr(op.value)), ""
        if isinstance(op, ir.Arg):
            return "box", f"arg {op.name}", ', style="rounded"'
        if isinstance(op, ir.VarRef):
            src = f" of branch {op.branch}" if op.fork is not None else ""
            return "box", f"{{{op.name}}}{src}", ', style="rounded"'
        if isinstance(op, ir.Interp):
            return "box", _short("{" + expr_to_str(op.expr) + "}"), ', style="rounded"'
        if isinstance(op, ir.Gen):
            params = ", ".join(f"{k}={v}" for k, v in op.sampling_params().items() if k != "stop")
            typed = f" ({op.dtype})" if op.dtype else " (regex)" if op.regex else " (json)" if op.json_schema else ""
            lines = [f"gen {op.name}{typed}", _short(params), f"wave {wave}"]
            return "ellipse", "\n".join(x for x in lines if x), fill
        if isinstance(op, ir.Select):
            choices = "|".join(op.choices) if isinstance(op.choices, tuple) else expr_to_str(op.choices)
            how = "one batched scoring call" if n in self.selects else "one call per choice"
            return "hexagon", f"select {op.name}\n[{_short(choices)}]\n{how} · wave {wave}", fill
        if isinstance(op, (ir.RoleBegin, ir.RoleEnd)):
            return "cds", f"{op.role} {'begin' if isinstance(op, ir.RoleBegin) else 'end'}", \
                ', style="filled", fillcolor="#eeeeee"'
        if isinstance(op, ir.Branch):
            return "diamond", "branch", ""
        if isinstance(op, ir.Loop):
            head = f"for {op.var} in {expr_to_str(op.iterable)}" if op.iterable is not None else \
                f"while {expr_to_str(op.cond)}"
            return "box3d", _short(head), ""
        if isinstance(op, ir.Fork):
            n_txt = op.n if isinstance(op.n, int) else expr_to_str(op.n)
            warm = str(n) in self.forks
            return "trapezium", f"fork ×{n_txt}\n" + ("parent prefilled once" if warm else "no warm-up"), \
                ', style="filled", fillcolor="#fff0d0"' if warm else ""
        if isinstance(op, ir.Join):
            return "invtrapezium", "join" + (" (concat)" if op.mode == "concate_and_append" else ""), ""
        if isinstance(op, ir.Return):
            return "doubleoctagon", _short("return " + (expr_to_str(op.value) if op.value is not None else "")), ""
        return "box", _short(ir.label(op)), ""

    def arm_label(self, node: int, arm: int) -> str:
        op = self.fn.op(node)
        if isinstance(op, ir.Branch):
            cond = op.conds[arm]
            return "else" if cond is None else ("if " if arm == 0 else "elif ") + _short(expr_to_str(cond))
        if isinstance(op, ir.Fork):
            return f"each branch (index {op.index_var})" if ir.num_arms(op) == 1 and not isinstance(op.n, int) or \
                op.shared_body else f"branch {arm}"
        return "loop body"

    def region(self, parent: int | None, arm: int, indent: str) -> None:
        nodes = self.fn.region(parent, arm)
        hoisted = int(self.fn.attrs.get("hoisted_prefix_ops", 0)) if parent is None else 0
        if hoisted:
            self.lines.append(f'{indent}subgraph cluster_prefix {{ label="shared prefix: prefilled once per batch"; '
                              f'style="dashed"; color="#888888";')
            for n in nodes[:hoisted]:
                self.node(n, indent + "  ")
            self.lines.append(f"{indent}}}")
        for n in nodes[hoisted:]:
            self.node(n, indent)
            for a in range(ir.num_arms(self.fn.op(n))):
                self.lines.append(f"{indent}subgraph cluster_{n}_{a} {{ label={_q(self.arm_label(n, a))}; "
                                  f'style="rounded"; color="#6699cc";')
                self.region(n, a, indent + "  ")
                self.lines.append(f"{indent}}}")

    def edges(self) -> None:
        for u, v, d in sorted(self.fn.graph.edges(data=True), key=lambda e: (e[0], e[1], e[2]["kind"])):
            if d["kind"] == "order":
                self.lines.append(f"  n{u} -> n{v};")
            elif d["kind"] == "body":
                self.lines.append(f'  n{u} -> n{v} [style=dashed, color="#6699cc"];')
            else:
                self.lines.append(f'  n{u} -> n{v} [style=dotted, color=blue, constraint=false];')
        for n in self.fn.graph.nodes:  # each arm's end flows back out to what follows its op
            op = self.fn.op(n)
            after = self.fn.next(n)
            if isinstance(op, ir.Fork):
                after = next((m for m in self.fn.graph.nodes if isinstance(self.fn.op(m), ir.Join)
                              and self.fn.op(m).fork == n), None)
            if not ir.num_arms(op) or after is None:
                continue
            for a in range(ir.num_arms(op)):
                last = self.fn.region(n, a)
                if last:
                    self.lines.append(f'  n{last[-1]} -> n{after} [style=dashed, color="#999999"];')

    def render(self) -> str:
        fn = self.fn
        sig = ", ".join(fn.params)
        last_wave = max(self.waves.values(), default=0)
        title = f"{fn.name}({sig}): {len(fn)} ops, {len(self.waves)} model call(s) in {last_wave} wave(s)"
        self.lines = [f"digraph {_q(fn.name)} {{", f"  label={_q(title)}; labelloc=t; fontname=Helvetica;",
                      "  compound=true; rankdir=TB;",
                      '  node [fontname=Helvetica, fontsize=11]; edge [fontname=Helvetica, fontsize=9];']
        self.region(None, 0, "  ")
        self.edges()
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"


def to_dot(fn: ir.IRFunction) -> str:
    return _Dot(fn).render()


def render_svg(dot: str) -> str:
    """The SVG graphviz draws (RuntimeError when `dot` is not on PATH or fails)."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("graphviz's `dot` is not on PATH")
    done = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.strip()}")
    return done.stdout
