"""`sglang launch-server` / `python -m sglang.launch_server`: load the Engine, then serve it with uvicorn.

The engine is loaded before the socket opens, so the URL printed at startup is ready for requests.
The server runs the scheduler in a child process unless `--no-scheduler-process` (then in a thread).
`--dp-size N` serves N replicas through one front (runtime/data_parallel.py). With `--nnodes N`, node 0
serves HTTP and runs the scheduler; a node with `--node-rank R > 0` runs only its tp ranks.
SIGTERM drains (server/drain.py): new requests get 503, running ones get `--drain-grace-period` seconds,
then what is left is aborted and the server exits.
`BackgroundServer` runs the same app in a thread of the current process (tests, notebooks, `sglang serve`).
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from typing import Any, Optional

logger = logging.getLogger("sglang.server")


# One line per ServerArgs field for `launch-server --help` (argparse appends each default). A field
# without a line here still works; tests/test_server_cli.py checks that every flag has one.
FLAG_HELP: dict[str, str] = {
    "model_path": "the model: 'default' (SmolLM2-135M-Instruct), a local HF folder or a .gguf file "
                  "(never downloaded)",
    "tokenizer_path": "tokenizer folder, when not the model's own",
    "load_format": "weights format: auto | safetensors | gguf | dummy (random weights, for tests)",
    "dtype": "weights and activations dtype: auto | float32 | float16 | bfloat16",
    "context_length": "longest prompt + output in tokens (default: the model config's)",
    "trust_remote_code": "accepted for SGLang compatibility (no remote code is ever run)",
    "random_seed": "seed of the sampler and of dummy weights",
    "served_model_name": "the model name /v1 clients send and /v1/models lists (default: the model path)",
    "chat_template": "chat template for /v1/chat/completions: a name, a .json or a .jinja file "
                     "(default: the tokenizer's)",
    "device": "auto | cpu | cuda",
    "max_total_tokens": "KV cache size in tokens (default: from --mem-fraction-static and free memory)",
    "mem_fraction_static": "fraction of GPU memory for weights and the KV cache",
    "max_running_requests": "most requests decoding at once",
    "max_prefill_tokens": "most prompt tokens in one prefill batch",
    "chunked_prefill_size": "split longer prompts into chunks of this many tokens (<= 0: no chunking)",
    "schedule_policy": "order of waiting requests: lpm (longest cached prefix first) | fcfs",
    "schedule_conservativeness": "how much KV to reserve for running requests' future tokens (higher: "
                                 "fewer retractions, less concurrency)",
    "disable_radix_cache": "do not reuse cached prompt prefixes",
    "enable_mixed_chunk": "decode running requests inside prefill forwards",
    "enable_cascade_decode": "decode rows sharing a cached prefix read its KV once (cascade attention; the "
                             "triton backend captures CUDA graphs for it, flashinfer runs it eagerly)",
    "attention_backend": "torch | triton | flashinfer (default: the best for the device)",
    "disable_cuda_graph": "run decode without CUDA graphs",
    "cuda_graph_max_bs": "largest decode batch captured as a CUDA graph",
    "disable_overlap": "do not overlap CPU scheduling with GPU decode",
    "disable_regex_jump_forward": "constrained decoding: do not jump over forced text",
    "tp_size": "tensor-parallel ranks (one process and GPU each)",
    "dist_init_addr": "host:port of the tensor-parallel process group (default: a free local port)",
    "nnodes": "machines the tensor-parallel ranks span (tp_size / nnodes ranks each); node 0 serves HTTP",
    "node_rank": "this machine's index among --nnodes (> 0: it runs only its tensor-parallel worker ranks)",
    "dp_size": "data-parallel scheduler replicas behind one HTTP front, each with its own model copy and cache "
               "(alias --dp)",
    "dp_policy": "how the front picks a replica: cache_aware | round_robin",
    "drain_grace_period": "seconds a SIGTERM lets requests in flight finish (new ones get 503) before the rest "
                          "are aborted",
    "host": "address to listen on",
    "port": "port to listen on (`sglang serve` defaults to another one, so both can run)",
    "api_key": "require 'Authorization: Bearer KEY' on every route but /health",
    "log_level": "debug | info | warning | error",
    "max_batch_size_per_request": "most outputs (prompts x n) one request may ask for",
    "stream_interval": "send a streamed chunk every this many tokens",
    "scheduler_process": "run the scheduler in a child process (default for launch-server) or, with "
                         "--no-scheduler-process, in a thread",
}


def build_parser() -> argparse.ArgumentParser:
    from sglang.runtime.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang launch-server", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Serve a model over HTTP: SGLang's native API (/generate) and the "
                                                 "OpenAI API (/v1). API docs at /docs once running.")
    ServerArgs.add_cli_args(parser)
    for action in parser._actions:  # argparse keeps no public list; the flags come from ServerArgs
        if action.dest in FLAG_HELP:
            action.help = FLAG_HELP[action.dest]
    return parser


def parse_args(argv: list[str]) -> Any:
    from sglang.runtime.server_args import ServerArgs

    return ServerArgs.from_cli_args(build_parser().parse_args(argv))


def uvicorn_config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    # The scheduler has its own thread or process; uvicorn only parses HTTP and awaits results, so one
    # worker suffices.
    # timeout_graceful_shutdown: once told to exit (after a drain), connections still open are cut
    return uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(), access_log=False,
                          timeout_keep_alive=30, backlog=4096, timeout_graceful_shutdown=5)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        server_args = parse_args(argv)
    except (ValueError, TypeError) as exc:
        print(f"sglang launch-server: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=server_args.log_level.upper(), format="[%(asctime)s %(name)s] %(message)s")
    if server_args.chat_template:  # fail before the (slow) model load
        from sglang.runtime.chat_template import load_chat_template

        try:
            load_chat_template(None, server_args.chat_template)
        except (ValueError, OSError) as exc:
            print(f"sglang launch-server: --chat-template: {exc}", file=sys.stderr)
            return 2
    if server_args.scheduler_process is None:  # the real server: HTTP and scheduler do not share a GIL
        server_args = server_args.replace(scheduler_process=True)
    if server_args.node_rank > 0:
        return run_worker_node(server_args)
    return serve(server_args)


def run_worker_node(server_args: Any) -> int:
    """`--node-rank R > 0`: this node's tp ranks only, until node 0 stops them (or dies)."""
    from sglang.runtime.resolved_model import resolve_model
    from sglang.runtime.tp_worker import serve_worker_node

    print(f"Node {server_args.node_rank}/{server_args.nnodes}: joining {server_args.dist_init_addr} ...", flush=True)
    failed = serve_worker_node(server_args, resolve_model(server_args))
    return 1 if failed else 0


def serve(server_args: Any) -> int:
    """Load the engine (or the dp replicas), then serve HTTP until SIGINT or a drained SIGTERM."""
    from sglang.runtime.data_parallel import make_engine
    from sglang.runtime.server.drain import DrainGate, DrainingServer
    from sglang.runtime.server.http_server import create_app

    dp = f" x {server_args.dp_size} replicas" if server_args.dp_size > 1 else ""
    print(f"Loading model {server_args.model_path!r}{dp} ...", flush=True)
    try:
        engine = make_engine(server_args)
    except (ValueError, OSError) as exc:  # a user mistake (no such model, bad config): one line, no traceback
        print(f"sglang launch-server: {exc}", file=sys.stderr)
        return 1
    lower_switch_interval()
    try:
        warm_up(engine, server_args)
        gate = DrainGate(create_app(engine, server_args))
        from sglang.runtime.process import settle_gc

        settle_gc("server process")
        # past the grace period, shutting the engine down ends what is left with finish reason "abort"
        server = DrainingServer(uvicorn_config(gate, server_args.host, server_args.port, server_args.log_level),
                                gate, server_args.drain_grace_period, abort_rest=engine.shutdown)
        url = f"http://{server_args.host}:{server_args.port}"

        def announce() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                print(f"The server is ready: {url}  (OpenAI API at {url}/v1)", flush=True)

        threading.Thread(target=announce, daemon=True).start()
        try:
            server.run()
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
            pass
        return 0 if server.started else 1
    finally:
        engine.shutdown()


WARM_UP_PROMPT = 2304  # past FLASHINFER_EXTEND_MIN_TOKENS: the large-extend path (and its compile) starts too


def warm_up(engine: Any, server_args: Any) -> None:
    """On a GPU, before the server says it is ready (SGLang sends a warm-up request too): a long prompt, then
    one extending its cached prefix, through every replica, so that the first requests do not wait for
    Triton's first-use compiles (1.1 s inside the first extend of a 1024-request burst on the H200) and
    FlashInfer's prefill compile starts now; then the prefix cache is emptied again."""
    import torch

    if server_args.device == "cpu" or not torch.cuda.is_available():
        return
    for replica in getattr(engine, "replicas", None) or [engine]:
        n = max(8, min(WARM_UP_PROMPT, replica.context_len - 64, replica.pool_size // 4))
        ids = [100 + (i * 7919) % 20000 % max(replica.vocab_size - 100, 1) for i in range(n)]
        try:
            replica.generate(input_ids=ids, sampling_params={"max_new_tokens": 4, "ignore_eos": True})
            replica.generate(input_ids=ids + ids[:32], sampling_params={"max_new_tokens": 4, "ignore_eos": True})
            replica.flush_cache()
        except Exception:  # a warm-up must never keep a working server from starting
            logging.getLogger(__name__).exception("warm-up request failed; serving anyway")


def lower_switch_interval() -> None:
    """This process runs the HTTP event loop next to an engine thread (the scheduler itself, or the
    scheduler process's output receiver). Python hands the GIL over only every switch interval (5 ms by
    default), so each time that thread wants it back (after a CUDA sync, on an arriving batch) it may
    wait that long behind the busy loop: shorten the wait. Never raises an interval set lower already."""
    from sglang.runtime.scheduler_process import SWITCH_INTERVAL_S

    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """Serve `create_app(engine, server_args)` from a daemon thread; `.url`, `.stop()`; a context manager."""

    def __init__(self, engine: Any, server_args: Any = None, host: str = "127.0.0.1",
                 port: Optional[int] = None, app: Any = None) -> None:
        import uvicorn

        from sglang.runtime.server.http_server import create_app

        if server_args is None:
            server_args = engine.get_server_args()
        self.engine = engine
        lower_switch_interval()
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.app = app if app is not None else create_app(engine, server_args)
        self.server = uvicorn.Server(uvicorn_config(self.app, host, self.port, "warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"sglang-http-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
