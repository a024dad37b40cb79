"""`sgl.Runtime(model_path=..., **server_args)`: a local server in a child process, used through HTTP.

It runs `python -m sglang.launch_server` on a free port, waits until the server answers, and
exposes `.url` and `.endpoint` (a RuntimeEndpoint), so `sgl.set_default_backend(runtime)` works.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import httpx

from sglang.lang.backends.runtime_endpoint import RuntimeEndpoint


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Runtime:
    def __init__(self, model_path: str = "default", host: str = "127.0.0.1", port: Optional[int] = None,
                 startup_timeout: float = 600.0, **server_args: Any) -> None:
        from sglang.runtime.server_args import ServerArgs

        ServerArgs.from_kwargs(model_path=model_path, host=host, **server_args)  # bad args fail here, by name
        self.port = port or _free_port(host)
        self.url = f"http://{host}:{self.port}"
        argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", model_path, "--host", host,
                "--port", str(self.port)]
        for key, value in server_args.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    argv.append(flag)
            elif value is not None:
                argv += [flag, str(value)]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="sglang-runtime-", suffix=".log", delete=False)
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())
        self._wait_ready(startup_timeout, server_args.get("api_key"))
        self.endpoint = RuntimeEndpoint(self.url, api_key=server_args.get("api_key"))

    def _wait_ready(self, timeout: float, api_key: Optional[str]) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server process exited with code {self.process.returncode} before it was "
                                   f"ready; its log:\n{self._log_tail()}")
            try:
                if httpx.get(self.url + "/get_model_info", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.shutdown()
        raise RuntimeError(f"the server on {self.url} was not ready after {timeout:.0f}s; its log:\n{self._log_tail()}")

    def _log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-n:]

    def shutdown(self) -> None:
        if getattr(self, "endpoint", None) is not None:
            self.endpoint.shutdown()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # SGLang's Runtime also answers these directly
    def generate(self, prompt: Any, sampling_params: Optional[dict] = None, **kwargs: Any) -> Any:
        return self.endpoint._call({"text": prompt, "sampling_params": sampling_params or {}, **kwargs})

    def get_server_args(self) -> dict[str, Any]:
        return self.endpoint.get_server_args()

    def flush_cache(self) -> bool:
        return self.endpoint.flush_cache()
