"""`sglc`: the ahead-of-time compiler for `.sgl` programs and Python `@sgl.function`s.

    sglc compile prog.sgl|module.py:fn -o prog.sglc [-O0|-O1] [-fno-<pass>] [--model PATH]
    sglc compile --emit ast|ir|ir-opt|plan|dot|svg prog.sgl|module.py:fn [--function NAME] [-o FILE]
        (dot/svg: regions, forks and waves of model calls, compiler/dot.py; `--emit dot -o p.svg` draws it)
    sglc compile --explain prog.sgl [--calibration costs.json] [--batch N]
    sglc check prog.sgl|module.py:fn

`module.py:fn` is traced with symbolic arguments (compiler/targets.py); `--emit ast` is for .sgl only.

User mistakes print as file:line:col with the source line and a caret, exit status 1; never a traceback.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from sglang.lang.sgl.errors import SglError
from sglang.lang.sgl.source import deep_stack
from sglang.compiler.passes import PASS_ORDER
from sglang.compiler.artifact import stamp
from sglang.compiler.plan import PlanError
from sglang.compiler.cost import DEFAULT_BATCH

EMITS = ("ast", "ir", "ir-opt", "plan", "dot", "svg")


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="sglc", formatter_class=fmt,
                                description="Compile .sgl programs to execution plans (sglang run / serve load them).",
                                epilog="examples: sglc check prog.sgl;  sglc compile prog.sgl -o prog.sglc;  "
                                       "sglc compile --emit ir prog.sgl")
    sub = p.add_subparsers(dest="command", required=True, metavar="{compile,check}")
    c = sub.add_parser("compile", formatter_class=fmt,
                       help="compile a program to a plan artifact, or emit an intermediate form",
                       description="Compile SOURCE to a plan artifact (default SOURCE.sglc), or print one "
                                   "intermediate form with --emit.")
    c.add_argument("source", help="the .sgl file (UTF-8), or module.py:fn (a Python @sgl.function)")
    c.add_argument("-o", "--output", help="artifact path (default: SOURCE with the suffix .sglc; "
                   "module.fn.sglc for module.py:fn)")
    c.add_argument("--emit", choices=EMITS, help="print this form instead of writing the artifact "
                   "(default: write the artifact)")
    c.add_argument("--function", help="only this function (for --emit ir/dot/svg; default: all functions, "
                   "or the last one for dot/svg)")
    c.add_argument("-O", dest="opt_level", type=int, default=1, choices=(0, 1),
                   help="optimization level: -O0 runs no passes, -O1 all of them")
    c.add_argument("-f", dest="flags", action="append", default=[], metavar="[no-]PASS",
                   help=f"switch one pass off (-fno-<pass>) or on (-f<pass>), repeatable; "
                        f"passes: {', '.join(PASS_ORDER)}")
    c.add_argument("--model", help="build token-level constraint tables for this model's tokenizer "
                   "(a local HF folder, a .gguf, or 'default'; default: none, built at run time)")
    c.add_argument("-v", "--verbose", action="store_true", help="print what each pass changed")
    c.add_argument("--explain", action="store_true", help="print, per pass, where it fired and the cost model's "
                   "predicted saving (and where it did not, and why)")
    c.add_argument("--calibration", metavar="PATH", help="measured runtime costs the cost model uses (a table "
                   "benchmarks/calibrate.py writes; default: $SGLANG_CALIBRATION, else built-in defaults)")
    c.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N",
                   help="items per run the cost model assumes")
    k = sub.add_parser("check", formatter_class=fmt, help="parse and check a program; print nothing but errors",
                       description="Parse and check SOURCE (all passes included) without writing anything; "
                                   "exit status 1 and file:line:col errors on a mistake.")
    k.add_argument("source", help="the .sgl file (UTF-8), or module.py:fn")
    return p


def split_argv(argv: list[str]) -> list[str]:
    # accept -O0 / -fno-x glued, as compilers do
    out = []
    for a in argv:
        if a.startswith("-O") and len(a) > 2:
            out += ["-O", a[2:]]
        elif a.startswith("-f") and len(a) > 2 and not a.startswith("--"):
            out += ["-f", a[2:]]
        else:
            out.append(a)
    return out


def pass_flags(flags: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    disabled, enabled = [], []
    for f in flags:
        name = f[3:] if f.startswith("no-") else f
        if name not in PASS_ORDER:
            raise SglError(f"unknown pass {name!r} in -f{f}", hint=f"passes: {', '.join(PASS_ORDER)}")
        (disabled if f.startswith("no-") else enabled).append(name)
    return tuple(disabled), tuple(enabled)


def _tokenizer(model: str | None) -> Any:
    if not model:
        return None
    from sglang.runtime.tokenizer import get_tokenizer

    return get_tokenizer(model)


def _emit(args: argparse.Namespace, disabled: tuple[str, ...], enabled: tuple[str, ...]) -> str:
    from sglang.lang.sgl.nodes import pretty
    from sglang.lang.sgl.parser import parse_file
    from sglang.compiler.irgen.build import lower_program
    from sglang.compiler.loader import load_program
    from sglang.compiler.targets import is_python_target, load_python_function
    from sglang.lang.ir import canonicalize

    python = is_python_target(args.source)
    if args.emit == "ast":
        if python:
            raise SglError("--emit ast is for .sgl sources", hint="a Python function has no .sgl AST; try --emit ir")
        module = parse_file(args.source)
        return pretty(module)
    names = [args.function] if args.function else None
    if args.emit == "ir":
        if python:
            fn = load_python_function(args.source)
            return f"# {fn.name}\n{fn.trace().pretty()}\n"
        fns = lower_program(load_program(args.source), names)
        return "\n\n".join(f"# {n}\n{canonicalize(f).pretty()}" for n, f in fns.items()) + "\n"
    log: list[str] = []
    plan = _compile(args, disabled, enabled, names, log)
    if args.explain:  # stdout carries the emitted form
        _explain(args, plan, sys.stderr)
    if args.emit == "plan":
        return plan.dumps(indent=2) + "\n"
    from sglang.lang.ir import IRFunction

    fns = {n: IRFunction.from_json(d) for n, d in plan.ir.items()}
    if args.emit == "ir-opt":
        return "\n\n".join(f"# {n}\n{f.pretty()}" for n, f in fns.items()) + "\n" + \
            "".join(f"# {line}\n" for line in log)
    from sglang.compiler.dot import render_svg, to_dot

    name = args.function or list(fns)[-1]
    if name not in fns:
        raise SglError(f"no function {name!r} in {args.source}", hint=f"functions: {', '.join(fns)}")
    dot = to_dot(fns[name])
    svg_file = args.output is not None and args.output.endswith(".svg")
    if args.emit == "dot" and not svg_file:
        return dot
    if shutil.which("dot") is None:
        raise SglError("an SVG picture needs graphviz's `dot` on PATH", hint="install graphviz, or use --emit dot")
    try:
        return render_svg(dot)
    except RuntimeError as e:
        raise SglError(str(e)) from None


def _compile(args: argparse.Namespace, disabled: tuple[str, ...], enabled: tuple[str, ...],
             names: list[str] | None, log: list[str]) -> Any:
    from sglang.compiler.calibration import load_calibration
    from sglang.compiler.cost import CostModel
    from sglang.compiler.lower import compile_source
    from sglang.compiler.targets import compile_python, is_python_target

    if args.batch < 1:
        raise SglError(f"--batch must be >= 1, got {args.batch}")
    cost = CostModel(load_calibration(args.calibration), args.batch)
    args.decisions, args.cost = [], cost  # for --explain
    if is_python_target(args.source):
        return compile_python(args.source, args.opt_level, disabled, enabled, log, cost=cost,
                              decisions=args.decisions)
    return compile_source(args.source, opt_level=args.opt_level, disabled=disabled, enabled=enabled,
                          tokenizer=_tokenizer(args.model), model=args.model, functions=names, log=log, cost=cost,
                          decisions=args.decisions)


def _explain(args: argparse.Namespace, plan: Any, stream: Any) -> None:
    from sglang.compiler.explain import format_explain

    stream.write(format_explain(args.decisions, args.cost, list(plan.passes)))


def _default_output(source: str) -> Path:
    from sglang.compiler.targets import is_python_target

    if is_python_target(source):  # module.py:fn -> module.fn.sglc, next to the module
        path, _, name = source.rpartition(":")
        return Path(path).with_suffix(f".{name}.sglc")
    return Path(source).with_suffix(".sglc")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(split_argv(argv))
    # the parser and the compiler recurse once per nesting level: give deep programs a deep stack
    try:
        return deep_stack(_run, args)
    except RecursionError:
        print(f"{args.source}: error: the program nests too deeply to compile", file=sys.stderr)
    except MemoryError:
        print(f"{args.source}: error: out of memory while compiling", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "check":  # everything compile does (passes included), without writing
            from sglang.compiler.targets import load_plan

            load_plan(args.source)
            return 0
        disabled, enabled = pass_flags(args.flags)
        if args.emit:
            text = _emit(args, disabled, enabled)
            if args.output:  # -o with --emit writes the form there (`--emit dot -o p.svg` draws the SVG)
                Path(args.output).write_text(text, encoding="utf-8")
                print(f"wrote {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        log: list[str] = []
        plan = _compile(args, disabled, enabled, None, log)
        if args.explain:
            _explain(args, plan, sys.stdout)
        out = Path(args.output) if args.output else _default_output(args.source)
        (stamp(plan, args.source) if args.source.endswith(".sgl") else plan).save(out)
        if args.verbose:
            for line in log:
                print(line, file=sys.stderr)
        steps = sum(len(f.steps) for f in plan.functions.values())
        print(f"wrote {out}: {len(plan.functions)} function(s), {steps} step(s), passes: "
              f"{', '.join(plan.passes) or 'none'}", file=sys.stderr)
        return 0
    except (SglError, PlanError) as e:
        print(str(e), file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # e.g. a bad --model path
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
