"""The ahead-of-time compiler: AST/trace -> IR graph, optimization passes, lowering to execution plans,
the plan executor and the `sglc` CLI."""
