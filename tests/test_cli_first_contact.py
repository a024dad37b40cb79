"""First contact with the command-line tools (issue 13): every flag is described with its default, a
missing model is one line (no traceback), `sglang --help` lists the commands, and `sglang serve` does not
default to launch-server's port."""
from __future__ import annotations

import argparse

import pytest

from sglang.cli import SUBCOMMANDS
from sglang.cli import main as sglang_main
from sglang.runtime.server.launch import FLAG_HELP, build_parser, main


def test_every_launch_server_flag_has_a_description_and_its_default(capsys):
    parser = build_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in flags} == set(FLAG_HELP)
    for a in flags:
        assert a.help and a.help != argparse.SUPPRESS, a.dest
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default: 30000)" in out and "(default: lpm)" in out and "KV cache size" in out


def test_missing_model_is_one_line(capsys):
    assert main(["--model-path", "/nonexistent/model"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sglang launch-server: ") and "/nonexistent/model" in err[0]
    assert "Traceback" not in err[0]


def test_sglang_help_lists_every_command(capsys):
    assert sglang_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name} " in out
    assert sglang_main([]) == 2 and "usage: sglang" in capsys.readouterr().err


def test_serve_and_launch_server_default_ports_differ(capsys):
    from sglang.compiler.run_cli import SERVE_PORT, main_serve

    assert SERVE_PORT != build_parser().get_default("port")
    with pytest.raises(SystemExit):
        main_serve(["--help"])
    out = capsys.readouterr().out
    assert f"(default: {SERVE_PORT})" in out and "--model" in out
