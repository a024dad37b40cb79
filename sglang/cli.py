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

USAGE = "usage: sglang {" + ",".join(SUBCOMMANDS) + "} [options]   (sglang <command> --help)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
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
