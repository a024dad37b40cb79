"""The package is a real folder: a wheel ships `sglang/` (with its grammar and stdlib files) and nothing
else, and the tests pass from a checkout in a folder of any name (pytest once died collecting from a
folder named like `.proj`, when the repository root itself was the package)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout")
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def test_wheel_ships_only_the_package(tmp_path):
    src = tmp_path / "src"
    for f in _tracked_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"sglang"}, tops
    assert "sglang/lang/sgl/sgl.lark" in names
    assert any(n.startswith("sglang/stdlib/") and n.endswith(".sgl") for n in names)
    assert not any("/tests/" in n or "/benchmarks/" in n or n.endswith("/setup.py") for n in names)


def test_suite_runs_from_a_folder_of_any_name(tmp_path):
    copy = tmp_path / ".x-y"
    for f in _tracked_files():
        if f.startswith(("sglang/", "tests/", "examples/")) or f == "pyproject.toml":
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, copy / f)
    env = dict(os.environ, PYTHONPATH=str(copy))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_ir_core.py",
                          "tests/test_sgl_parser.py"], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout
    probe = subprocess.run([sys.executable, "-c", "import sglang; print(sglang.__file__)"], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == str(copy / "sglang" / "__init__.py")
