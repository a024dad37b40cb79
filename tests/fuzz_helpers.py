"""Property-based fuzzing of the HTTP APIs (from the server's own OpenAPI schema) and of the `.sgl`
parser and compiler. Shared by the CI tests (tests/test_fuzz.py, small budget) and benchmarks/fuzz.py
(large budget, figures for docs/benchmarks.md).

HTTP: schemathesis turns each operation's requestBody schema into hypothesis strategies, mixing valid
bodies with boundary and schema-violating ones (positive and negative generation); every answer must be
below 500 and /health must keep answering. `.sgl`: hypothesis builds programs from the grammar's tokens
(keywords, names, strings, numbers, brackets, operators) and random text; parsing and compiling must
end in success or an SglError, never another exception.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# What a fuzzed request may not exceed: the fuzzer's own requests ask for at most this many new tokens
# (the schema allows any int; a huge valid value is answered 400, a large one just takes long).
MAX_FUZZ_NEW_TOKENS = 16


@dataclass
class FuzzFigures:
    """What a fuzz run records (docs/benchmarks.md)."""

    cases: int = 0
    server_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    worst_latency_s: float = 0.0
    worst_case: str = ""
    failures: list[str] = field(default_factory=list)

    def record(self, label: str, status: int, latency: float) -> None:
        self.cases += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if latency > self.worst_latency_s:
            self.worst_latency_s, self.worst_case = latency, label
        if status >= 500:
            self.server_errors += 1
            if len(self.failures) < 20:
                self.failures.append(label)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (the server runs in it), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bounded(body: Any, model: str) -> Any:
    """Keep fuzzed generations short (the fuzzer hunts for 5xx, not long outputs) and name the served
    model in half the cases that name one (a random name stops at the 404)."""
    if isinstance(body, dict):
        if isinstance(body.get("model"), str) and len(body["model"]) % 2 == 0:
            body["model"] = model
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool) and body[key] > MAX_FUZZ_NEW_TOKENS:
                body[key] = MAX_FUZZ_NEW_TOKENS
        sps = body.get("sampling_params")
        for sp in sps if isinstance(sps, list) else [sps]:
            if isinstance(sp, dict):
                v = sp.get("max_new_tokens")
                if v is None or (isinstance(v, int) and not isinstance(v, bool) and v > MAX_FUZZ_NEW_TOKENS):
                    sp["max_new_tokens"] = MAX_FUZZ_NEW_TOKENS
    return body


def fuzz_http(base_url: str, max_examples: int, *, seed: int = 0,
              operations: tuple[str, ...] = ("/generate", "/v1/completions", "/v1/chat/completions",
                                             "/abort_request")) -> FuzzFigures:
    """Fuzz each POST operation of the server at base_url with `max_examples` generated bodies."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    figures = FuzzFigures()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        for path in operations:
            op = schema.find_operation_by_path("POST", path)
            strategy = op.as_strategy(generation_mode=GenerationMode.POSITIVE) | \
                op.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            _fuzz_operation(client, path, strategy, max_examples, seed, figures, model)
            assert client.get("/health").status_code == 200
    return figures


def _fuzz_operation(client: httpx.Client, path: str, strategy: Any, max_examples: int, seed: int,
                    figures: FuzzFigures, model: str) -> None:
    @settings(max_examples=max_examples, deadline=None, derandomize=seed == 0, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        body = _bounded(case.body, model)
        content = _dumps(body)
        start = time.monotonic()
        r = client.post(path, content=content, headers={"content-type": "application/json"})
        figures.record(f"POST {path} {content[:300]!r}", r.status_code, time.monotonic() - start)

    run()


def _dumps(body: Any) -> bytes:
    import json

    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):  # a negative case may hold what JSON cannot say: send it as text
        return str(body).encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- .sgl

_KEYWORDS = ["def", "gen", "select", "fork", "join", "branch", "if", "elif", "else", "for", "while", "in",
             "return", "import", "from", "as", "and", "or", "not", "true", "false", "none", "let", "system",
             "user", "assistant"]
_PUNCT = ["{", "}", "(", ")", "[", "]", ",", ":", "=", "==", "!=", "+", "-", "*", "/", "%", "<", ">", ".",
          ";", "\n", " ", "#", "\\", "'", '"', '"""', "{{", "}}"]
_ATOMS = st.one_of(
    st.sampled_from(_KEYWORDS + _PUNCT),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
    st.from_regex(r'"([^"\\\n]|\\.){0,8}"', fullmatch=True),
    st.from_regex(r"\d{1,12}(\.\d{1,3})?", fullmatch=True),
    st.text(max_size=4),
)
# Mostly well-formed skeletons with fuzzed insides reach the compiler; raw token soup tests the parser.
_BODY = st.lists(_ATOMS, max_size=40).map(" ".join)
SGL_PROGRAMS = st.one_of(
    _BODY,
    st.builds(lambda name, params, body: f"def {name}({params}) {{\n{body}\n}}\n",
              st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
              st.sampled_from(["", "x", "x, y", "q: str", "n: int"]), _BODY),
)


def fuzz_sgl(max_examples: int, *, seed: int = 0, on_case: Callable[[str, float], None] | None = None) -> FuzzFigures:
    """Parse and compile generated programs; any exception but SglError is a failure (server_errors)."""
    from sglang.compiler.lower import compile_source
    from sglang.lang.sgl.errors import SglError
    from sglang.compiler.plan import PlanError

    figures = FuzzFigures()

    @settings(max_examples=max_examples, deadline=None, derandomize=seed == 0, database=None,
              suppress_health_check=list(HealthCheck))
    @given(text=SGL_PROGRAMS)
    def run(text: str) -> None:
        start = time.monotonic()
        status = 200
        try:
            compile_source(text=text, file="fuzz.sgl")
        except (SglError, PlanError):
            status = 400
        except Exception as exc:  # noqa: BLE001 - the property: nothing else may escape
            status = 500
            text = f"{type(exc).__name__}: {exc} <- {text!r}"
        figures.record(text[:300], status, time.monotonic() - start)

    run()
    return figures
