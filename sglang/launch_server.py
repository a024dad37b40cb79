"""`python -m sglang.launch_server --model-path ...`, as SGLang users are used to."""
from __future__ import annotations

import sys

from sglang.cli import main

if __name__ == "__main__":
    sys.exit(main(["launch-server", *sys.argv[1:]]))
