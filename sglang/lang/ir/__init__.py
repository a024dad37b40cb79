"""Program IR: expressions (`expr`), op types (`ops`), the op graph (`graph`), validation and data edges
(`check`, called by `IRFunction.check()`), canonical form (`canon`), static types (`types`: `check_types`).

Inside the package the modules import each other in that order (expr <- ops <- check <- graph <- canon; types
builds on expr and ops);
everyone else imports the names below from `sglang.lang.ir`.
"""
from sglang.lang.ir.canon import canonicalize, structural_equal
from sglang.lang.ir.expr import (Binary, CallExpr, Const, Expr, Index, ListExpr, Name, Unary, check_expr, eval_expr,
                                 expr_from_json, expr_to_json, expr_to_str, is_expr, map_expr, names_in, substitute,
                                 value_from_json)
from sglang.lang.ir.graph import IR_FORMAT, Cursor, IRFunction
from sglang.lang.ir.ops import (CHOICES_METHODS, JOIN_MODES, NODE_REF_FIELDS, OP_TYPES, ROLES, STRUCTURED, Arg, Branch,
                                Call, Fork, Gen, Image, Interp, IRError, Join, Loc, Loop, Return, RoleBegin, RoleEnd,
                                Select, Text, VarRef, Video, defines, describe, label, map_op_exprs, num_arms,
                                op_exprs, op_from_json, op_to_json)

__all__ = [
    "Arg", "Binary", "Branch", "CHOICES_METHODS", "Call", "CallExpr", "Const", "Cursor", "Expr", "Fork", "Gen",
    "IRError", "IRFunction", "IR_FORMAT", "Image", "Index", "Interp", "JOIN_MODES", "Join", "ListExpr", "Loc",
    "Loop", "NODE_REF_FIELDS", "Name", "OP_TYPES", "ROLES", "Return", "RoleBegin", "RoleEnd", "STRUCTURED",
    "Select", "Text", "Unary", "VarRef", "Video", "canonicalize", "check_expr", "defines", "describe", "eval_expr",
    "expr_from_json", "expr_to_json", "expr_to_str", "is_expr", "label", "map_expr", "map_op_exprs", "names_in",
    "num_arms", "op_exprs", "op_from_json", "op_to_json", "structural_equal", "substitute", "value_from_json",
]
