"""The execution plan: the compiled form of a program, saved as a versioned artifact (`.sglc`).

A plan holds, per function, its signature and a list of steps. A step is one IR op made concrete:
its kind, its arguments (sampling params resolved to the native request keys, select/fork flags from
the passes), `deps` (the steps it waits for: its program-order predecessor and the producers of the
variables it reads) and, for control steps, `arms` (the step ids of each nested region). `entry` is
the top region. The artifact is JSON: {"format": "sglang-plan", "version": 1, ...}; loading checks
both and names what is wrong; `compiler/artifact.py` validates the steps and checks freshness.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLAN_FORMAT = "sglang-plan"
PLAN_VERSION = 1


class PlanError(ValueError):
    """A bad or incompatible plan artifact."""


@dataclass
class Step:
    id: int
    kind: str  # text arg var interp gen select role_begin role_end image video branch loop fork join return
    args: dict[str, Any] = field(default_factory=dict)
    deps: list[int] = field(default_factory=list)
    arms: list[list[int]] = field(default_factory=list)
    loc: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind}
        if self.args:
            out["args"] = self.args
        if self.deps:
            out["deps"] = self.deps
        if self.arms:
            out["arms"] = self.arms
        if self.loc:
            out["loc"] = self.loc
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Step":
        return Step(d["id"], d["kind"], d.get("args", {}), d.get("deps", []), d.get("arms", []), d.get("loc"))


@dataclass
class FunctionPlan:
    name: str
    params: list[str]
    param_types: dict[str, str]
    defaults: dict[str, Any]
    returns: dict[str, Any]  # {"kind": single|tuple|dict|none, "keys": [...]}
    entry: list[int]
    steps: list[Step]
    hoisted_prefix_steps: int = 0
    generated: list[str] = field(default_factory=list)  # every variable some step generates

    def step(self, sid: int) -> Step:
        return self.steps[sid]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "param_types": self.param_types,
                "defaults": self.defaults, "returns": self.returns, "entry": self.entry,
                "hoisted_prefix_steps": self.hoisted_prefix_steps, "generated": self.generated,
                "steps": [s.to_json() for s in self.steps]}

    @staticmethod
    def from_json(d: dict[str, Any]) -> "FunctionPlan":
        steps = [Step.from_json(s) for s in d["steps"]]
        for i, s in enumerate(steps):
            if s.id != i:
                raise PlanError(f"plan of {d.get('name')!r}: step {i} has id {s.id}")
        return FunctionPlan(d["name"], list(d["params"]), dict(d.get("param_types", {})), dict(d.get("defaults", {})),
                            dict(d.get("returns", {"kind": "none"})), list(d["entry"]), steps,
                            int(d.get("hoisted_prefix_steps", 0)), list(d.get("generated", [])))


@dataclass
class Plan:
    functions: dict[str, FunctionPlan]
    source: str | None = None
    passes: list[str] = field(default_factory=list)
    constraints: dict[str, Any] = field(default_factory=dict)
    ir: dict[str, Any] = field(default_factory=dict)  # function -> IR JSON after the passes (for --emit, debugging)
    model: str | None = None  # tokenizer the constraint tables were built for, if any
    source_sha256: str | None = None  # digest of the source files when compiled (artifact.check_fresh)
    compiler_version: str | None = None

    def function(self, name: str | None) -> FunctionPlan:
        if name is None:
            return self.functions[default_function(list(self.functions))]
        if name not in self.functions:
            raise PlanError(f"no function {name!r} in the program (functions: {', '.join(self.functions)})")
        return self.functions[name]

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "source": self.source, "passes": self.passes,
                "model": self.model, "source_sha256": self.source_sha256,
                "compiler_version": self.compiler_version, "functions": {n: f.to_json() for n, f in self.functions.items()},
                "constraints": self.constraints, "ir": self.ir}

    def dumps(self, indent: int | None = None) -> str:
        return json.dumps(self.to_json(), indent=indent, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @staticmethod
    def from_json(d: Any) -> "Plan":
        if not isinstance(d, dict) or d.get("format") != PLAN_FORMAT:
            raise PlanError("not a compiled sglang plan (missing format 'sglang-plan'); compile it with `sglc compile`")
        if d.get("version") != PLAN_VERSION:
            raise PlanError(f"plan format version {d.get('version')!r} is not supported by this sglang "
                            f"(it reads version {PLAN_VERSION}); recompile with this sglc")
        try:
            fns = {n: FunctionPlan.from_json(f) for n, f in d["functions"].items()}
        except (KeyError, TypeError) as e:
            raise PlanError(f"corrupt plan: missing or bad field {e}") from None
        return Plan(fns, d.get("source"), list(d.get("passes", [])), dict(d.get("constraints", {})),
                    dict(d.get("ir", {})), d.get("model"), d.get("source_sha256"), d.get("compiler_version"))

    @staticmethod
    def load(path: str | Path) -> "Plan":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PlanError(f"no such file: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PlanError(f"{path} is not a plan artifact (not JSON: {e})") from None
        return Plan.from_json(data)


def default_function(names: list[str]) -> str:
    """The function `sglang run` picks without --function: `main`, else the only one, else the last."""
    if not names:
        raise PlanError("the program defines no function")
    if "main" in names:
        return "main"
    return names[-1]
