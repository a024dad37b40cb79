"""Pydantic models of a served program function: its request body (from the signature) and its response
(from its return kind and the variables its gens and selects set), for validation and /docs.

A variable's JSON type follows from where its step sits: a gen or select at the function's top level
always sets a string; under a branch it may be missing (null); in a loop it holds a list when the loop
ran more than once (the executor's `variables` keep every value); in a fork it is gathered at the join
into one entry per branch. A single return value that is a generated variable is a string.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from sglang.lang.ir.expr import ListExpr, Name, expr_from_json
from sglang.compiler.plan import FunctionPlan

_PY_TYPE: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict,
                            "image": str, "video": str, "any": Any}


def _title(fplan: FunctionPlan, suffix: str) -> str:
    return "".join(part.title() for part in fplan.name.split("_")) + suffix


def request_model(fplan: FunctionPlan) -> type[BaseModel]:
    """A pydantic model of the function's parameters (unknown fields rejected)."""
    fields: dict[str, Any] = {}
    for p in fplan.params:
        typ = _PY_TYPE.get(fplan.param_types.get(p, "any"), Any)
        if p in fplan.defaults:
            fields[p] = (Optional[typ] if fplan.defaults[p] is None else typ, Field(default=fplan.defaults[p]))
        else:
            fields[p] = (typ, Field(...))
    return create_model(_title(fplan, "Args"), __config__=ConfigDict(extra="forbid", strict=False), **fields)


def batch_model(fplan: FunctionPlan, item: type[BaseModel]) -> type[BaseModel]:
    return create_model(_title(fplan, "Batch"), __config__=ConfigDict(extra="forbid"),
                        items=(list[item], Field(..., min_length=1)))  # type: ignore[valid-type]


def variable_places(fplan: FunctionPlan) -> dict[str, str]:
    """Each generated variable -> where it is set: top | branch | loop | fork (the most general place wins)."""
    rank = {"top": 0, "branch": 1, "loop": 2, "fork": 3}
    places: dict[str, str] = {}
    todo = [(sid, "top") for sid in fplan.entry]
    while todo:
        sid, where = todo.pop()
        step = fplan.step(sid)
        if step.kind in ("gen", "select") and step.args.get("name"):
            name = step.args["name"]
            if rank[where] >= rank.get(places.get(name, "top"), 0):
                places[name] = where
        inner = {"branch": "branch", "loop": "loop", "fork": "fork"}.get(step.kind)
        for arm in step.arms:
            todo += [(s, max(where, inner or where, key=rank.__getitem__)) for s in arm]
    return places


def _variable_type(where: str) -> tuple[Any, Any]:
    if where == "top":
        return str, Field(...)
    if where == "branch":
        return Optional[str], Field(None)
    if where == "loop":
        return Optional[Union[str, list[str]]], Field(None, description="a list when the loop set it more than once")
    return Optional[list[Optional[str]]], Field(None, description="one entry per fork branch")


def _expr_type(ej: Any, generated: set[str]) -> Any:
    """str for an expression that reads a generated variable (a gen holds text whatever its dtype)."""
    try:
        expr = expr_from_json(ej)
    except Exception:  # an expression form this module does not know: leave it untyped
        return Any
    if isinstance(expr, Name) and expr.name in generated:
        return Optional[str]
    return Any


def _return_values(fplan: FunctionPlan) -> list[Any]:
    return [s.args.get("value") for s in fplan.steps if s.kind == "return" and s.args.get("value") is not None]


def return_type(fplan: FunctionPlan) -> Any:
    """The JSON type of the function's return value (what `shape_return` makes of it)."""
    declared = _PY_TYPE.get(str(fplan.returns.get("type")))
    if declared is not None:
        return Optional[declared]
    kind = fplan.returns.get("kind", "none")
    values = _return_values(fplan)
    generated = set(fplan.generated)
    if kind == "none" or not values:
        return None
    if kind == "tuple":
        return list[Any]
    if kind == "dict":
        keys = list(fplan.returns.get("keys", []))
        types = [Any] * len(keys)
        if len(values) == 1:
            try:
                expr = expr_from_json(values[0])
            except Exception:
                expr = None
            if isinstance(expr, ListExpr) and len(expr.items) == len(keys):
                types = [str if isinstance(e, Name) and e.name in generated else Any for e in expr.items]
        fields = {k: (Optional[t], Field(None)) for k, t in zip(keys, types)}
        return create_model(_title(fplan, "Return"), **fields)
    types = {_expr_type(v, generated) for v in values}
    return types.pop() if len(types) == 1 else Any


def response_model(fplan: FunctionPlan) -> type[BaseModel]:
    """The body of a 200 answer of POST /programs/{name}."""
    vars_fields = {name: _variable_type(where) for name, where in sorted(variable_places(fplan).items())}
    variables = create_model(_title(fplan, "Variables"), **vars_fields)
    return create_model(
        _title(fplan, "Result"),
        index=(int, Field(..., description="the item's position in its request")),
        return_=(return_type(fplan), Field(None, alias="return", description="the function's return value")),
        variables=(variables, Field(..., description="every variable a gen or select set")),
        meta_info=(Optional[dict[str, Any]], Field(None, description="logprobs a gen asked for; select scores")),
    )


def batch_response_model(fplan: FunctionPlan, item: type[BaseModel]) -> type[BaseModel]:
    class _Failed(BaseModel):
        index: int
        error: str

    failed = create_model(_title(fplan, "Failure"), __base__=_Failed)
    return create_model(_title(fplan, "BatchResult"),
                        results=(list[Union[item, failed]], Field(..., description="one per item, in order")))  # type: ignore[valid-type]
