"""sgl.Runtime: a server child process (`python -m sglang.launch_server`) used through HTTP; on a
tiny dummy-weight model so it starts fast (the text is meaningless, the plumbing is real)."""
from __future__ import annotations

import pytest

import sglang as sgl


@pytest.mark.slow
def test_runtime_starts_serves_a_program_and_shuts_down(tiny_llama_path):
    runtime = sgl.Runtime(model_path=tiny_llama_path, load_format="dummy", max_total_tokens=4096,
                          disable_cuda_graph=True, device="cpu")
    try:
        assert runtime.get_server_args()["load_format"] == "dummy"

        @sgl.function
        def prog(s, q):
            s += sgl.user(q)
            s += sgl.assistant(sgl.gen("a", max_tokens=5, ignore_eos=True))
            s += "pick: " + sgl.select("c", choices=["yes", "no"])

        state = prog.run(q="hi", temperature=0, backend=runtime)
        assert state.get_meta_info("a")["completion_tokens"] == 5
        assert state["c"] in ("yes", "no")
        assert state.messages()[0] == {"role": "user", "content": "hi"}
        # the server's own template (SmolLM2's chatml, sent in /get_model_info), not the SYSTEM:/USER: fallback
        assert state.text().startswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        assert runtime.flush_cache() is True
    finally:
        runtime.shutdown()
    assert runtime.process.poll() is not None


def test_runtime_bad_argument_fails_before_starting():
    with pytest.raises(TypeError, match="no_such_flag"):
        sgl.Runtime(model_path="x", no_such_flag=1)
