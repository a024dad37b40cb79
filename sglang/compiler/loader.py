"""Load a `.sgl` program with its imports: files by path, modules by name (next to the importer, then stdlib/).

`load_program(path)` returns a `SourceProgram`: the main module plus a symbol table that maps each
callable name (`f`, `alias.f`) to its `FuncDef` and the module it lives in. Import cycles, missing
modules and clashing names are `SglSemanticError`s at the import's position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sglang.lang.sgl import nodes as A
from sglang.lang.sgl.errors import SglSemanticError, SourcePos
from sglang.lang.sgl.parser import parse_file, parse_source
from sglang.lang.sgl.source import read_source

STDLIB_DIR = Path(__file__).resolve().parent.parent / "stdlib"


@dataclass
class FuncRef:
    func: A.FuncDef
    module: A.Module
    symbols: dict[str, "FuncRef"] = field(default_factory=dict, repr=False)  # names visible in its module


@dataclass
class SourceProgram:
    main: A.Module
    text: str
    symbols: dict[str, FuncRef]  # names callable from the main module
    texts: dict[str, str] = field(default_factory=dict)  # file -> source, for error positions

    def entry_functions(self) -> list[str]:
        return [f.name for f in self.main.functions]


def _pos(texts: dict[str, str], file: str, p: A.Pos) -> SourcePos:
    return SourcePos.of(texts.get(file, ""), file, p.line, p.col)


def _resolve(imp: A.Import, importer: str) -> Path | None:
    base = Path(importer).resolve().parent if importer not in ("<string>", "") else Path.cwd()
    if imp.path is not None:
        cands = [base / imp.path, STDLIB_DIR / imp.path]
    else:
        rel = imp.module.replace(".", "/") + ".sgl"
        cands = [base / rel, STDLIB_DIR / rel]
        if imp.module.startswith("stdlib."):
            cands.append(STDLIB_DIR / (imp.module[len("stdlib."):].replace(".", "/") + ".sgl"))
    return next((c for c in cands if c.is_file()), None)


class _Loader:
    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.done: dict[Path, dict[str, FuncRef]] = {}  # file -> its exported functions

    def module_symbols(self, module: A.Module, stack: tuple[Path, ...]) -> dict[str, FuncRef]:
        symbols: dict[str, FuncRef] = {}
        where: dict[str, A.Pos] = {}

        def add(name: str, ref: FuncRef, pos: A.Pos, what: str) -> None:
            if name in symbols:
                prev = where[name]
                raise SglSemanticError(f"duplicate name {name!r}: {what} clashes with the one at line {prev.line}",
                                       _pos(self.texts, module.file, pos))
            symbols[name], where[name] = ref, pos

        for imp in module.imports:
            path = _resolve(imp, module.file)
            what = imp.path if imp.path is not None else imp.module
            if path is None:
                raise SglSemanticError(f"cannot find module {what!r}", _pos(self.texts, module.file, imp.pos),
                                       f"looked next to {module.file} and in {STDLIB_DIR}")
            if path in stack:
                raise SglSemanticError(f"import cycle: {' -> '.join(p.name for p in stack + (path,))}",
                                       _pos(self.texts, module.file, imp.pos))
            exported = self.load(path, stack)
            if imp.names:
                for n in imp.names:
                    if n not in exported:
                        raise SglSemanticError(f"module {what!r} has no function {n!r}",
                                               _pos(self.texts, module.file, imp.pos),
                                               f"it defines: {', '.join(exported) or 'nothing'}")
                    add(n, exported[n], imp.pos, f"imported function {n!r}")
            else:
                alias = imp.alias or (imp.module.split(".")[-1] if imp.module else Path(imp.path).stem)
                for n, ref in exported.items():
                    add(f"{alias}.{n}", ref, imp.pos, f"imported function {alias}.{n}")
        local: dict[str, FuncRef] = {}
        for f in module.functions:
            ref = FuncRef(f, module, symbols)
            add(f.name, ref, f.pos, f"function {f.name!r}")
            local[f.name] = ref
        return symbols

    def load(self, path: Path, stack: tuple[Path, ...] = ()) -> dict[str, FuncRef]:
        if path in self.done:
            return self.done[path]
        module = parse_file(path)
        self.texts[module.file] = read_source(path)
        symbols = self.module_symbols(module, stack + (path,))
        exported = {f.name: symbols[f.name] for f in module.functions}
        self.done[path] = exported
        return exported


def load_program(path: str | Path | None = None, text: str | None = None, file: str | None = None) -> SourceProgram:
    """Parse a program (from `path`, or from `text` named `file`) and resolve its imports."""
    loader = _Loader()
    if text is None:
        if path is None:
            raise ValueError("load_program needs a path or text")
        p = Path(path)
        if not p.is_file():
            raise SglSemanticError(f"no such file: {p}")
        text = read_source(p)
        module = parse_file(p)
        stack: tuple[Path, ...] = (p.resolve(),)
    else:
        module = parse_source(text, file or "<string>")
        stack = ()
    loader.texts[module.file] = text
    symbols = loader.module_symbols(module, stack)
    return SourceProgram(module, text, symbols, loader.texts)
