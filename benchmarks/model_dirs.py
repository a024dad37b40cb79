"""Model folders for benchmarks: a published config.json from benchmarks/configs/<name>/ plus SmolLM2's
tokenizer files, loaded with load_format="dummy" (random weights of the real shapes).

    python benchmarks/model_dirs.py llama-3.2-1b     # prints the folder path (creates it if needed)

The tokenizer files come from $SGLANG_BENCH_TOKENIZER, else ./.bench_tok (the git-ignored folder carried
to the GPU machine), else the converted default model (sglang.runtime.model_loader).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = HERE / "configs"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
NAMES = sorted(p.name for p in CONFIGS.iterdir() if (p / "config.json").is_file())


def tokenizer_source() -> Path:
    env = os.environ.get("SGLANG_BENCH_TOKENIZER")
    if env:
        return Path(env)
    local = REPO / ".bench_tok"
    if (local / "tokenizer.json").is_file():
        return local
    from sglang.runtime.model_loader import resolve_model_path

    return Path(resolve_model_path("default"))


def model_dir(name: str, root: str | os.PathLike = REPO / ".bench_models") -> str:
    """The folder for benchmark model `name` (one of NAMES), created on first use."""
    if name not in NAMES:
        raise ValueError(f"unknown benchmark model {name!r}; known: {', '.join(NAMES)}")
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIGS / name / "config.json", out / "config.json")
    src = tokenizer_source()
    for f in TOKENIZER_FILES:
        if (src / f).is_file() and not (out / f).is_file():
            shutil.copy(src / f, out / f)
    return str(out)


def copy_tokenizer(dest: str | os.PathLike) -> None:
    """Fill `dest` (e.g. ./.bench_tok) with the tokenizer files, to carry them to a machine without the model."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    src = tokenizer_source()
    for f in TOKENIZER_FILES:
        if (src / f).is_file():
            shutil.copy(src / f, Path(dest) / f)


def make_default_stand_in(cache_root: str | os.PathLike) -> str:
    """A tokenizer-only stand-in for the default model under `cache_root` (use as SGLANG_CACHE_DIR on a
    machine without the SmolLM2 GGUF package): a placeholder GGUF plus an already "converted" folder with
    config.json and the tokenizer files, so fixtures that only need the tokenizer work. No weights: any
    test that loads the real default model fails there, by design."""
    import json

    os.environ["SGLANG_CACHE_DIR"] = str(Path(cache_root).resolve())
    from sglang.runtime.model_loader import default_model as dm

    gguf = dm.cache_dir() / "gguf" / dm.SMOLLM2_GGUF
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(b"placeholder: tokenizer-only default model for GPU test runs (no weights)\n")
    target = dm.converted_dir_for(str(gguf))
    copy_tokenizer(target)
    shutil.copy(CONFIGS / "smollm2-135m" / "config.json", target / "config.json")
    (target / dm._DONE_MARKER).write_text(json.dumps({"source": "tokenizer-only stand-in"}))
    return str(target)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--copy-tokenizer":
        copy_tokenizer(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--default-stand-in":
        print(make_default_stand_in(sys.argv[2]))
    else:
        for n in sys.argv[1:] or NAMES:
            print(model_dir(n))
