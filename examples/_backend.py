"""Backend choice shared by the examples: in-process Engine (default), `--url URL` for a running
server (ours or SGLang's), or `--openai MODEL` for an OpenAI-compatible API."""
from __future__ import annotations

import argparse

import sglang as sgl


def setup_backend(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-path", default="default", help="model for the in-process Engine")
    parser.add_argument("--url", help="use a running server, e.g. http://127.0.0.1:30000")
    parser.add_argument("--openai", metavar="MODEL", help="use an OpenAI-compatible API with this model")
    parser.add_argument("--base-url", help="OpenAI-compatible base URL (with --openai)")
    args, rest = parser.parse_known_args(argv)
    args.rest = rest  # example-specific positional arguments
    if args.url:
        sgl.set_default_backend(sgl.RuntimeEndpoint(args.url))
    elif args.openai:
        sgl.set_default_backend(sgl.OpenAI(args.openai, base_url=args.base_url))
    else:
        sgl.set_default_backend(sgl.Engine(model_path=args.model_path))
    return args
