"""Where the real SGLang 0.2.10 frontend lives on this machine, for programs that must run on it.

SGLang 0.2.10 also imports as `sglang`, so it runs in a process of its own whose path holds it and not our
package: either a virtualenv (created here on first use from PyPI, frontend only: sglang==0.2.10 brings
requests, tqdm and numpy) or, on a machine without network, a `pip install --no-deps --target DIR` folder of
its wheel used as PYTHONPATH with this interpreter. `python_and_env()` answers both ways.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
