"""The `sglang` command: `sglang launch-server ...`, `sglang run prog.sgl ...`, `sglang serve prog.sgl ...`.

Each subcommand lives with its layer; this file only dispatches, importing the chosen one lazily.
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv list and returning an exit code)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "launch-server": ("sglang.runtime.server.launch", "main"),
    "run": ("sglang.compiler.run_cli", "main_run"),
    "serve": ("sglang.compiler.run_cli", "main_serve"),
    "router": ("sglang.runtime.router.app", "main"),
}

SUMMARIES: dict[str, str] = {
    "launch-server": "serve a model over HTTP: native /generate and OpenAI /v1 (default port 30000)",
    "run": "run a .sgl program (or a compiled .sglc) on a batch of inputs, printing JSON lines",
    "serve": "serve each function of a .sgl program as POST /programs/<name> (default port 30001)",
    "router": "spread requests over several launch-server workers",
}

USAGE = "usage: sglang {" + ",".join(SUBCOMMANDS) + "} [options]   (sglang <command> --help)"
HELP = "\n".join([USAGE, "", "commands:", *(f"  {name:<14} {SUMMARIES[name]}" for name in SUBCOMMANDS), "",
                  "Compile programs ahead of time with `sglc` (sglc --help)."])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP if argv else USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"sglang: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    module_name, func_name = SUBCOMMANDS[command]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
