"""`.sgl` inputs that used to crash or hang sglc (issue 13): deep nesting, long operator chains, huge
unrolled forks, non-UTF-8 files and a UTF-8 BOM. Each ends in an exit status and a one-line-plus-caret
error (or a successful compile), never a traceback."""
from __future__ import annotations

import pytest

from sglang.compiler import cli
from sglang.lang.sgl import source
from sglang.lang.sgl.errors import SglError, SglSyntaxError
from sglang.lang.sgl.parser import parse_file, parse_source


def nested_ifs(n: int) -> str:
    return "def f(x) {\n" + "if x == 1 {\n" * n + '"a"\n' + "}\n" * n + "}\n"


def plus_chain(n: int) -> str:
    return "def f() {\n let x = " + " + ".join(['"a"'] * n) + "\n x\n}\n"


def sglc(tmp_path, capsys, text: str | bytes, *args: str) -> tuple[int, str]:
    path = tmp_path / "prog.sgl"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    rc = cli.main(["check", str(path), *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("text", [nested_ifs(400), plus_chain(3000)], ids=["400 nested ifs", "3000-term + chain"])
def test_deep_programs_compile_with_sglc(tmp_path, capsys, text):
    rc, err = sglc(tmp_path, capsys, text)
    assert rc == 0, err


@pytest.mark.parametrize("text", [nested_ifs(400), plus_chain(3000)], ids=["400 nested ifs", "3000-term + chain"])
def test_library_parse_past_pythons_limit_is_an_sgl_error(text):
    from sglang.compiler.lower import compile_source

    # under Python's default recursion limit the library gives an SglError, not a RecursionError
    with pytest.raises(SglError, match="nests too deeply"):
        compile_source(text=text, file="deep.sgl")


def test_nesting_past_the_limit_is_refused_at_the_opener(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(source, "MAX_NESTING", 50)
    monkeypatch.setattr(source.check_nesting, "__defaults__", (50,))
    text = "def f() {\n" + "user {\n" * 60 + '"a"\n' + "}\n" * 60 + "}\n"
    rc, err = sglc(tmp_path, capsys, text)
    assert rc == 1 and "Traceback" not in err
    assert "prog.sgl:51:6: syntax error: blocks and brackets nest deeper than 50 levels" in err
    # strings and comments hold no brackets
    ok = 'def f() {\n "' + "{" * 60 + '" # ' + "(" * 60 + "\n}\n"
    parse_source(ok)


@pytest.mark.parametrize("count", [100_000, 100_000_000])
def test_huge_constant_fork_is_refused_quickly(tmp_path, capsys, count):
    rc, err = sglc(tmp_path, capsys, 'def f() {\n fork g[%d] as i {\n "a"\n }\n}\n' % count)
    assert rc == 1 and f"fork count {count} is more than" in err and "prog.sgl:2:9" in err


def test_huge_constant_for_is_refused(tmp_path, capsys):
    rc, err = sglc(tmp_path, capsys, 'def f() {\n for i in range(100000) {\n "a"\n }\n}\n')
    assert rc == 1 and "more than 4096" in err and "prog.sgl:2:" in err


def test_non_utf8_file_names_file_line_and_column(tmp_path, capsys):
    rc, err = sglc(tmp_path, capsys, b'def f() {\n "caf\xe9"\n}\n')
    assert rc == 1 and "Traceback" not in err
    assert "prog.sgl:2:6: syntax error: the file is not valid UTF-8: byte 0xe9 at line 2, column 6" in err
    with pytest.raises(SglSyntaxError, match="not valid UTF-8"):
        parse_file(tmp_path / "prog.sgl")


def test_utf8_bom_is_accepted(tmp_path, capsys):
    rc, err = sglc(tmp_path, capsys, b'\xef\xbb\xbfdef f() {\n "a"\n}\n')
    assert rc == 0, err
    assert [f.name for f in parse_source('\ufeffdef g() {\n "a"\n}\n').functions] == ["g"]


def test_sglc_help_describes_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compile", "--help"])
    out = capsys.readouterr().out
    for flag in ("-o OUTPUT", "--emit", "--function", "-O", "-f [no-]PASS", "--model", "-v"):
        assert flag in out
    assert "(default: 1)" in out and "--help" in out
