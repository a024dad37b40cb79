"""Where the real SGLang 0.2.10 frontend lives on this machine, for programs that must run on it.

SGLang 0.2.10 also imports as `sglang`, so it runs in a process of its own whose path holds it and not our
package: either a virtualenv (created here on first use from PyPI, frontend only: sglang==0.2.10 brings
requests, tqdm and numpy) or, on a machine without network, a `pip install --no-deps --target DIR` folder of
its wheel used as PYTHONPATH with this interpreter. `python_and_env()` answers both ways.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

VERSION = "0.2.10"


def cache_dir() -> Path:
    return Path(os.environ.get("SGLANG_CACHE_DIR") or Path.home() / ".cache" / "sglang-aot")


def ensure_venv(root: Optional[Path] = None) -> str:
    """The python of a virtualenv holding sglang==0.2.10, created (about 20 s, needs PyPI) if missing.

    Safe when several processes race: each builds in its own temporary folder and the first to finish wins."""
    venv = (root or cache_dir() / "venvs") / f"sglang-{VERSION}"
    marker = venv / ".installed"
    if not marker.exists():
        tmp = venv.with_name(venv.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=300)
        proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               f"sglang=={VERSION}"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install sglang=={VERSION} failed:\n{proc.stderr[-3000:]}")
        (tmp / ".installed").write_text(VERSION)
        if not marker.exists():  # another process may have won the race; keep theirs
            shutil.rmtree(venv, ignore_errors=True)
            os.replace(tmp, venv)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(venv / "bin" / "python")


def python_and_env(target: Optional[str] = None, python: Optional[str] = None) -> tuple[str, dict[str, str]]:
    """(python, environment) of a process that imports SGLang 0.2.10 as `sglang`: from the `--target` folder
    `target` (with this interpreter), else the interpreter `python`, else the cached virtualenv. Every
    PYTHON* variable of ours is dropped, so our package is not on its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONUNBUFFERED"] = "1"
    if target:
        env["PYTHONPATH"] = str(Path(target).resolve())
        return sys.executable, env
    return python or ensure_venv(), env


# what SGLang 0.2.10's RuntimeEndpoint does with the server's /get_model_info: its template by the path's name
_TEMPLATE_PROBE = """
import json, sys
from sglang.lang.chat_template import get_chat_template_by_model_path
t = get_chat_template_by_model_path(sys.argv[1])
print(json.dumps({"name": t.name, "style": t.style.name, "default_system_prompt": t.default_system_prompt,
                  "roles": {r: list(t.role_prefix_and_suffix.get(r, ("", ""))) for r in ("system", "user", "assistant")}}))
"""


def chat_template_for(model_path: str, python: str, env: dict[str, str]) -> dict:
    """The chat template SGLang 0.2.10's frontend uses against a server that reports `model_path`
    (`get_chat_template_by_model_path`: it matches the path's name, e.g. "llama-3" + "instruct"; anything
    else gets its "default" SYSTEM:/USER: roles): {name, style, default_system_prompt, roles}."""
    proc = subprocess.run([python, "-c", _TEMPLATE_PROBE, model_path], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise RuntimeError(f"cannot ask SGLang {VERSION} for its chat template:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
