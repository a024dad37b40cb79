"""Vision-language models end to end through the Engine (tiny random llava-1.5 on CPU, SmolLM2's tokenizer
with an "<image>" token): image_data in every accepted form, the image's tokens in the radix key (the
same image shares its prefix KV, another never does), greedy outputs equal to transformers', and bad
image input answered with a ValueError naming the field while the engine keeps serving."""
from __future__ import annotations

import base64
import io

import pytest
import torch

from vlm_helpers import build_servable_llava, make_image

PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
GREEDY = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def llava(tmp_path_factory, default_model_path):
    folder = tmp_path_factory.mktemp("tiny_llava_engine")
    hf, image_token = build_servable_llava(folder, default_model_path)
    return str(folder), hf, image_token


@pytest.fixture(scope="module")
def engine(llava):
    from sglang.runtime.engine import Engine

    eng = Engine(model_path=llava[0], device="cpu", dtype="float32", max_total_tokens=4096)
    yield eng
    eng.shutdown()


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_offset(engine) -> int:
    """Where the prompt's image run starts (the tokens before "<image>")."""
    return len(engine.tokenizer.encode(PROMPT.split("<image>")[0]))


def output_ids(out: dict) -> list[int]:
    return [tok for _, tok, *_ in out["meta_info"]["output_token_logprobs"]]


def test_same_image_shares_its_prefix_and_another_image_does_not(engine):
    engine.flush_cache()
    img, other = make_image((10, 200, 30)), make_image((200, 10, 30))
    ntok = engine.multimodal.processor.process_image(img).num_tokens
    start = image_offset(engine)
    first = engine.generate(PROMPT, GREEDY, image_data=img)
    again = engine.generate(PROMPT.replace("What", "Which"), GREEDY, image_data=png_bytes(img))
    different = engine.generate(PROMPT, GREEDY, image_data=other)
    assert first["meta_info"]["cached_tokens"] == 0
    assert first["meta_info"]["prompt_tokens"] > start + ntok
    # the same pixels sent as bytes: its image tokens come from the cache
    assert again["meta_info"]["cached_tokens"] >= start + ntok
    # another image: only the text before it is shared
    assert different["meta_info"]["cached_tokens"] <= start
    assert different["text"] != first["text"] or output_ids(different) != output_ids(first)
    engine.check_invariant()


def test_greedy_tokens_equal_transformers(engine, llava):
    _, hf, image_token = llava
    img = make_image((90, 40, 160), size=(70, 50))
    out = engine.generate(PROMPT, {**GREEDY, "max_new_tokens": 10}, image_data=img, return_logprob=True)
    processed = engine.multimodal.processor.process_image(img)
    ids = []
    for tok in engine.tokenizer.encode(PROMPT):
        ids += [tok] * (processed.num_tokens if tok == image_token else 1)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        x = torch.tensor([ids])
        ref = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=processed.pixel_values,
                          max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert output_ids(out) == ref[0, len(ids):].tolist()
    assert out["meta_info"]["prompt_tokens"] == len(ids)


def test_every_image_form_gives_the_same_output(engine, tmp_path):
    img = make_image((120, 60, 200))
    data = png_bytes(img)
    path = tmp_path / "pic.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    forms = [img, data, str(path), f"file://{path}", f"data:image/png;base64,{b64}", b64]
    texts = {engine.generate(PROMPT, GREEDY, image_data=f)["text"] for f in forms}
    assert len(texts) == 1


def test_two_images_and_a_batch(engine):
    a, b = make_image((10, 10, 250)), make_image((250, 250, 10))
    prompt = "USER: <image> and <image>: which is brighter? ASSISTANT:"
    both = engine.generate(prompt, GREEDY, image_data=[a, b])
    swapped = engine.generate(prompt, GREEDY, image_data=[b, a])
    assert both["meta_info"]["prompt_tokens"] == swapped["meta_info"]["prompt_tokens"]
    singles = [engine.generate(PROMPT, GREEDY, image_data=x)["text"] for x in (a, b)]
    batch = engine.generate([PROMPT, PROMPT], GREEDY, image_data=[a, b])
    assert [o["text"] for o in batch] == singles


@pytest.mark.parametrize("image_data,prompt,message", [
    (b"not an image at all", PROMPT, "supported format"),
    (png_bytes(make_image((1, 2, 3)))[:60], PROMPT, "corrupt"),
    ("https://example.com/cat.png", PROMPT, "not fetched"),
    ("/no/such/file.png", PROMPT, "does not exist"),
    ([make_image((1, 2, 3))] * 2, PROMPT, "placeholder"),
    ([make_image((1, 2, 3))] * 17, PROMPT, "too many images"),
])
def test_bad_image_input_is_a_value_error_and_the_engine_keeps_serving(engine, image_data, prompt, message):
    with pytest.raises(ValueError, match=message) as info:
        engine.generate(prompt, GREEDY, image_data=image_data)
    assert "image_data" in str(info.value)
    assert engine.generate(PROMPT, GREEDY, image_data=make_image((5, 5, 5)))["meta_info"]["completion_tokens"] == 8


def huge_png_header(side: int) -> bytes:
    """A PNG whose header claims side x side pixels (no pixel data): the size check must come first."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_too_large_image_is_rejected(engine):
    with pytest.raises(ValueError, match="pixels"):
        engine.generate(PROMPT, GREEDY, image_data=huge_png_header(20000))


def test_video_on_an_image_model_is_rejected(engine):
    with pytest.raises(ValueError, match="video_data"):
        engine.generate(PROMPT, GREEDY, image_data=make_image((1, 2, 3)), video_data=("clip.mp4", 4))


def test_text_only_model_rejects_image_data(tiny_llama_path):
    from sglang.runtime.engine import Engine

    with Engine(model_path=tiny_llama_path, device="cpu", dtype="float32", load_format="dummy",
                max_total_tokens=1024) as eng:
        assert not eng.is_multimodal
        with pytest.raises(ValueError, match="text-only"):
            eng.generate("<image> hi", GREEDY, image_data=make_image((1, 2, 3)))


def test_images_cross_into_a_scheduler_process(llava):
    """The items (pixels, offsets, hashes) travel to a scheduler process; its radix key is the same."""
    from sglang.runtime.engine import Engine

    img = make_image((10, 200, 30))
    with Engine(model_path=llava[0], device="cpu", dtype="float32", max_total_tokens=4096,
                scheduler_process=True) as eng:
        first = eng.generate(PROMPT, GREEDY, image_data=img)
        again = eng.generate(PROMPT.replace("What", "Which"), GREEDY, image_data=img)
    ntok = 16  # the tiny tower's 4x4 patches
    assert first["meta_info"]["cached_tokens"] == 0
    assert again["meta_info"]["cached_tokens"] >= ntok


def test_feature_cache_skips_the_vision_tower_for_an_image_seen_before(engine):
    """With the prefix cache flushed the image's tokens are recomputed, but its features come from the
    feature cache (by content hash): the vision tower does not run again."""
    tower = engine.model_runner.model.vision_tower
    calls = []
    hook = tower.register_forward_hook(lambda *_: calls.append(1))
    try:
        img = make_image((77, 13, 140))
        engine.generate(PROMPT, GREEDY, image_data=img)
        assert len(calls) == 1
        engine.flush_cache()
        out = engine.generate(PROMPT, GREEDY, image_data=png_bytes(img))
        assert len(calls) == 1 and out["meta_info"]["cached_tokens"] == 0
        engine.generate(PROMPT, GREEDY, image_data=make_image((1, 99, 1)))
        assert len(calls) == 2
    finally:
        hook.remove()


def test_penalties_and_input_logprobs_read_real_token_ids(engine):
    """The radix key's pad ids lie past the vocabulary: penalties and logprobs must see the real ids."""
    img = make_image((60, 60, 200))
    out = engine.generate(PROMPT, {**GREEDY, "frequency_penalty": 0.5, "repetition_penalty": 1.3},
                          image_data=img, return_logprob=True, logprob_start_len=0, top_logprobs_num=2)
    prompt_ids = [tok for _, tok, *_ in out["meta_info"]["input_token_logprobs"]]
    assert len(prompt_ids) == out["meta_info"]["prompt_tokens"]
    assert max(prompt_ids) < engine.vocab_size
    assert prompt_ids.count(engine.multimodal.vlm.image_token_id) == 16


def test_chunked_prefill_splitting_an_image_gives_the_same_tokens(llava, engine):
    """A prefill chunk boundary inside the image's run: each chunk takes its part of the image's features."""
    from sglang.runtime.engine import Engine

    img = make_image((220, 120, 20))
    whole = engine.generate(PROMPT, GREEDY, image_data=img, return_logprob=True)
    with Engine(model_path=llava[0], device="cpu", dtype="float32", max_total_tokens=4096,
                chunked_prefill_size=7) as chunked:
        split = chunked.generate(PROMPT, GREEDY, image_data=img, return_logprob=True)
        assert chunked.stats()["forward_extend"] >= 3
    assert output_ids(split) == output_ids(whole)
