"""`.sgl` syntax tree → IR with semantic checks: scopes (`scope`), expressions (`exprs`), gen/select arguments
(`gen_args`), the builder (`build`). "Lowering" elsewhere in the compiler means IR → plan only."""
