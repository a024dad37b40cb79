"""`sglang launch-server` / `python -m sglang.launch_server`: flags come from ServerArgs, bad flags are a clear
error, and a launched server prints its URL once the model is loaded and then serves requests.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from server_helpers import child_pids, read_until_ready, wait_gone

from sglang.runtime.server.launch import free_port, main, parse_args


def test_flags_map_onto_server_args():
    args = parse_args(["--model-path", "/m", "--port", "1234", "--api-key", "k", "--max-batch-size-per-request", "4",
                       "--disable-radix-cache", "--context-length", "512", "--chat-template", "chatml"])
    assert (args.model_path, args.port, args.api_key, args.max_batch_size_per_request) == ("/m", 1234, "k", 4)
    assert args.disable_radix_cache is True and args.context_length == 512 and args.chat_template == "chatml"
    assert parse_args([]).model_path == "default"
    assert parse_args([]).scheduler_process is None  # launch-server turns it on; Engine(...) leaves it off
    assert parse_args(["--scheduler-process"]).scheduler_process is True
    assert parse_args(["--no-scheduler-process"]).scheduler_process is False


def test_bad_flag_values_are_reported(capsys):
    assert main(["--schedule-policy", "fastest"]) == 2
    assert "schedule_policy" in capsys.readouterr().err
    assert main(["--chat-template", "no-such-template"]) == 2
    assert "no-such-template" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--port", "eighty"])
    assert info.value.code == 2


def test_help_lists_server_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model-path" in out and "--api-key" in out and "--max-batch-size-per-request" in out


def test_sglang_command_dispatches_launch_server(capsys):
    from sglang.cli import main as sglang_main

    with pytest.raises(SystemExit) as info:
        sglang_main(["launch-server", "--help"])
    assert info.value.code == 0 and "sglang launch-server" in capsys.readouterr().out


def test_launch_server_subprocess_serves_until_interrupted(tiny_llama_path):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", tiny_llama_path, "--load-format", "dummy",
           "--port", str(port), "--max-total-tokens", "4096", "--api-key", "cli-key", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = read_until_ready(proc, 240)
        assert f"http://127.0.0.1:{port}" in lines[-1]
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/health").status_code == 200
        headers = {"Authorization": "Bearer cli-key"}
        r = httpx.post(url + "/generate", headers=headers, timeout=60,
                       json={"text": "hello", "sampling_params": {"max_new_tokens": 3, "ignore_eos": True}})
        assert r.status_code == 200 and r.json()["meta_info"]["completion_tokens"] == 3
        assert httpx.get(url + "/v1/models", headers=headers).json()["data"][0]["id"] == tiny_llama_path
        # the real server runs the scheduler in a child process by default; it must not outlive the server
        assert httpx.get(url + "/get_server_args", headers=headers).json()["scheduler_process"] is True
        children = child_pids(proc.pid)
        assert children
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not wait_gone(children, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
