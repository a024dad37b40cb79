"""Online serving benchmark over HTTP: Poisson arrivals, streamed responses, TTFT / ITL / E2E percentiles.

    python benchmarks/bench_serving.py --base-url http://127.0.0.1:30000 --dataset random \
        --num-prompts 200 --request-rate 16 --random-input-len 512 --random-output-len 128
    python benchmarks/bench_serving.py --base-url ... --dataset generated-shared-prefix \
        --gsp-num-groups 8 --gsp-prompts-per-group 16 --gsp-system-prompt-len 1024 --gsp-question-len 64

Prompts are token ids (exact lengths, no tokenizer needed). `--backend sglang` uses the native
`/generate` (input_ids), `--backend openai` uses `/v1/completions` (prompt as token ids). The cache
hit rate is cached_tokens / prompt_tokens over all requests, as reported by the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

import httpx


@dataclass(frozen=True)
class BenchRequest:
    input_ids: list[int]
    output_len: int


@dataclass
class RequestResult:
    ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    e2e: float = 0.0
    itls: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- datasets

def random_dataset(rng: random.Random, num: int, input_len: int, output_len: int, range_ratio: float,
                   vocab: tuple[int, int]) -> list[BenchRequest]:
    """Lengths uniform in [len * range_ratio, len]; token ids uniform in the vocab range."""
    out = []
    for _ in range(num):
        il = rng.randint(max(1, int(input_len * range_ratio)), input_len)
        ol = rng.randint(max(1, int(output_len * range_ratio)), output_len)
        out.append(BenchRequest([rng.randrange(*vocab) for _ in range(il)], ol))
    return out


def shared_prefix_dataset(rng: random.Random, groups: int, per_group: int, system_len: int, question_len: int,
                          output_len: int, vocab: tuple[int, int]) -> list[BenchRequest]:
    """`groups` long system prompts, each followed by `per_group` distinct questions (shuffled order)."""
    out = []
    for _ in range(groups):
        system = [rng.randrange(*vocab) for _ in range(system_len)]
        for _ in range(per_group):
            out.append(BenchRequest(system + [rng.randrange(*vocab) for _ in range(question_len)], output_len))
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- one request

def _payload(backend: str, req: BenchRequest, model: str, ignore_eos: bool) -> tuple[str, dict[str, Any]]:
    if backend == "sglang":
        return "/generate", {"input_ids": req.input_ids, "stream": True,
                             "sampling_params": {"max_new_tokens": req.output_len, "temperature": 0.0,
                                                 "ignore_eos": ignore_eos}}
    return "/v1/completions", {"model": model, "prompt": req.input_ids, "max_tokens": req.output_len,
                               "temperature": 0.0, "stream": True, "ignore_eos": ignore_eos,
                               "stream_options": {"include_usage": True}}


class _SSEConnection:
    """A bare asyncio HTTP/1.1 POST whose streamed body is read line by line as it arrives.

    One connection per request and no client-side pool: with hundreds of requests in flight, a pooled
    client (httpx/httpcore) spends more CPU on its own bookkeeping than the server does, which would
    inflate TTFT/ITL; this keeps the client's share of the measurement small.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                f"Content-Length: {len(data)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        chunked = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        return status, self._lines(chunked)

    async def _lines(self, chunked: bool) -> AsyncIterator[str]:
        buf = b""
        while True:
            if chunked:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                piece = (await self.reader.readexactly(size + 2))[:-2]  # chunk data + CRLF
            else:
                piece = await self.reader.read(65536)
                if not piece:
                    break
            buf += piece
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.decode("utf-8").rstrip("\r")
        if buf:
            yield buf.decode("utf-8")

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()


async def send_one(url: tuple[str, int], backend: str, req: BenchRequest, model: str, ignore_eos: bool,
                   headers: dict[str, str]) -> RequestResult:
    path, body = _payload(backend, req, model, ignore_eos)
    res = RequestResult()
    start = time.perf_counter()
    last_t, last_n = start, 0
    conn = _SSEConnection(*url)
    try:
        status, lines = await conn.post(path, body, headers)
        if status != 200:
            res.error = f"HTTP {status}: " + " ".join([line async for line in lines])[:200]
            return res
        async for line in lines:
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            data = json.loads(line[5:])
            if "error" in data:
                res.error = str(data["error"])
                return res
            reason = (data.get("meta_info") or {}).get("finish_reason") or {}
            if isinstance(reason, dict) and reason.get("type") == "abort":  # the server gave up on it
                res.error = "aborted: " + str(reason.get("message") or "")
                return res
            n, prompt, cached = _progress(backend, data, last_n)
            if prompt is not None:
                res.prompt_tokens, res.cached_tokens = prompt, cached
            now = time.perf_counter()
            if n > last_n:
                if last_n == 0:
                    res.ttft = now - start
                else:
                    res.itls.extend([(now - last_t) / (n - last_n)] * (n - last_n))
                last_t, last_n = now, n
        res.output_tokens = last_n
        res.e2e = time.perf_counter() - start
        res.ok = True
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return res


def _progress(backend: str, data: dict[str, Any], last_n: int) -> tuple[int, Optional[int], int]:
    """(completion tokens so far, prompt tokens or None, cached tokens) from one SSE event."""
    if backend == "sglang":
        meta = data.get("meta_info") or {}
        return int(meta.get("completion_tokens", last_n)), meta.get("prompt_tokens"), int(meta.get("cached_tokens") or 0)
    usage = data.get("usage")
    if usage:  # final usage chunk
        details = usage.get("prompt_tokens_details") or {}
        return int(usage["completion_tokens"]), usage["prompt_tokens"], int(details.get("cached_tokens") or 0)
    # Text chunks do not carry counts: one chunk per token with stream_interval 1.
    has_text = any(c.get("text") for c in data.get("choices", []))
    return last_n + (1 if has_text else 0), None, 0


# --------------------------------------------------------------------------- driver

def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def run_benchmark(base_url: str, requests: list[BenchRequest], request_rate: float, backend: str = "sglang",
                        seed: int = 0, ignore_eos: bool = True, api_key: Optional[str] = None,
                        max_concurrency: Optional[int] = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise ValueError(f"--base-url must be http://HOST:PORT, got {base_url!r}")
    url = (parsed.hostname, parsed.port or 80)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60), headers=headers) as client:
        info = (await client.get("/get_model_info")).json()
        model = (await client.get("/v1/models")).json()["data"][0]["id"] if backend == "openai" else ""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def guarded(r: BenchRequest) -> RequestResult:
        if sem is None:
            return await send_one(url, backend, r, model, ignore_eos, headers)
        async with sem:
            return await send_one(url, backend, r, model, ignore_eos, headers)

    started_at = time.time()  # epoch: lines the run up with the server's forward timeline (SGLANG_TIMELINE)
    start = time.perf_counter()
    tasks = []
    for r in requests:
        tasks.append(asyncio.create_task(guarded(r)))
        if request_rate != math.inf:
            await asyncio.sleep(rng.expovariate(request_rate))  # Poisson process
    results = await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    summary = summarize(results, duration, info.get("model_path", ""))
    summary["started_at"] = started_at
    return summary


def summarize(results: list[RequestResult], duration: float, model: str) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft for r in ok if r.output_tokens]
    itls = [x for r in ok for x in r.itls]
    e2es = [r.e2e for r in ok]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    out_toks = sum(r.output_tokens for r in ok)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    return {
        "model": model, "completed": len(ok), "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": round(duration, 3), "request_throughput": round(len(ok) / duration, 3),
        "input_tokens": prompt, "output_tokens": out_toks,
        "input_throughput": round(prompt / duration, 1), "output_throughput": round(out_toks / duration, 1),
        "cache_hit_rate": round(cached / prompt, 4) if prompt else 0.0,
        "ttft_ms": {"mean": ms(sum(ttfts) / len(ttfts)) if ttfts else None, "p50": ms(_pct(ttfts, 0.5)),
                    "p99": ms(_pct(ttfts, 0.99))},
        "itl_ms": {"mean": ms(sum(itls) / len(itls)) if itls else None, "p50": ms(_pct(itls, 0.5)),
                   "p99": ms(_pct(itls, 0.99))},
        "e2e_ms": {"mean": ms(sum(e2es) / len(e2es)) if e2es else None, "p50": ms(_pct(e2es, 0.5)),
                   "p99": ms(_pct(e2es, 0.99))},
    }


def build_dataset(args: argparse.Namespace) -> list[BenchRequest]:
    rng = random.Random(args.seed)
    vocab = (args.min_token_id, args.max_token_id)
    if args.dataset == "random":
        return random_dataset(rng, args.num_prompts, args.random_input_len, args.random_output_len,
                              args.random_range_ratio, vocab)
    return shared_prefix_dataset(rng, args.gsp_num_groups, args.gsp_prompts_per_group, args.gsp_system_prompt_len,
                                 args.gsp_question_len, args.gsp_output_len, vocab)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", default=None, help="default http://HOST:PORT")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--backend", choices=["sglang", "openai"], default="sglang")
    p.add_argument("--api-key", default=None)
    p.add_argument("--dataset", choices=["random", "generated-shared-prefix"], default="random")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (Poisson); inf = all at once")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--random-input-len", type=int, default=512)
    p.add_argument("--random-output-len", type=int, default=128)
    p.add_argument("--random-range-ratio", type=float, default=1.0)
    p.add_argument("--gsp-num-groups", type=int, default=64)
    p.add_argument("--gsp-prompts-per-group", type=int, default=16)
    p.add_argument("--gsp-system-prompt-len", type=int, default=2048)
    p.add_argument("--gsp-question-len", type=int, default=128)
    p.add_argument("--gsp-output-len", type=int, default=256)
    p.add_argument("--min-token-id", type=int, default=100, help="sampled prompt ids avoid special tokens below")
    p.add_argument("--max-token-id", type=int, default=30000)
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at EOS (default: exact lengths)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-file", default=None, help="append the JSON summary as one line")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse_args(argv)
    base_url = args.base_url or f"http://{args.host}:{args.port}"
    requests = build_dataset(args)
    summary = asyncio.run(run_benchmark(base_url, requests, args.request_rate, args.backend, args.seed,
                                        not args.no_ignore_eos, args.api_key, args.max_concurrency))
    summary["config"] = {k: v for k, v in vars(args).items() if k not in ("api_key",)}
    summary["config"]["request_rate"] = str(args.request_rate)
    print(json.dumps(summary, indent=2))
    if args.output_file:
        with open(args.output_file, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["failed"] == 0 else 1)
