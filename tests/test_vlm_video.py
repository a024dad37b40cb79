"""Videos and any-resolution images end to end (tiny random LLaVA-NeXT-Video on CPU, PyAV decoding):
video_data through the Engine (greedy tokens equal transformers', the same video shares its prefix KV),
`sgl.video` in a program, and a LLaVA-NeXT any-resolution image equal to transformers'."""
from __future__ import annotations

import pytest
import torch

import sglang as sgl
from vlm_helpers import write_video

pytest.importorskip("av")
PROMPT = "USER: <video>\nWhat happens? ASSISTANT:"
GREEDY = {"max_new_tokens": 6, "temperature": 0, "ignore_eos": True}
FRAMES = 4


@pytest.fixture(scope="module")
def video_model(tmp_path_factory, default_model_path):
    from sglang.runtime.engine import Engine
    from sglang.runtime.multimodal.tiny import build_tiny_llava

    folder = tmp_path_factory.mktemp("tiny_llava_video")
    hf, _ = build_tiny_llava(folder, default_model_path, video=True)
    clip = folder / "clip.mp4"
    write_video(clip)
    eng = Engine(model_path=str(folder), device="cpu", dtype="float32", max_total_tokens=4096)
    yield eng, hf, str(clip)
    eng.shutdown()


def test_video_greedy_equals_transformers_and_shares_its_prefix(video_model):
    engine, hf, clip = video_model
    engine.flush_cache()
    first = engine.generate(PROMPT, GREEDY, video_data=(clip, FRAMES), return_logprob=True)
    again = engine.generate(PROMPT.replace("What", "Why"), GREEDY, video_data={"path": clip, "num_frames": FRAMES})
    processed = engine.multimodal.processor.process_video(clip, FRAMES)
    video_token = engine.multimodal.vlm.video_token_id
    ids = []
    for tok in engine.tokenizer.encode(PROMPT):
        ids += [tok] * (processed.num_tokens if tok == video_token else 1)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        x = torch.tensor([ids])
        ref = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), pixel_values_videos=processed.pixel_values[None],
                          max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert [t for _, t, *_ in first["meta_info"]["output_token_logprobs"]] == ref[0, len(ids):].tolist()
    assert again["meta_info"]["cached_tokens"] >= processed.num_tokens


def test_sgl_video_in_a_program(video_model):
    engine, _, clip = video_model

    @sgl.function
    def watch(s, path):
        s += "USER: " + sgl.video(path, FRAMES) + "\nWhat happens? ASSISTANT:"
        s += sgl.gen("answer", max_tokens=6, temperature=0, ignore_eos=True)

    state = watch.run(path=clip, backend=sgl.EngineBackend(engine))
    assert state["answer"] == engine.generate(PROMPT, GREEDY, video_data=[(clip, FRAMES)])["text"]


def test_video_errors_name_the_field(video_model):
    engine, _, clip = video_model
    with pytest.raises(ValueError, match="video_data.*num_frames"):
        engine.generate(PROMPT, GREEDY, video_data=(clip, 0))
    with pytest.raises(ValueError, match="video_data.*does not exist"):
        engine.generate(PROMPT, GREEDY, video_data=("/no/such.mp4", 4))


def test_any_resolution_image_on_the_next_video_model_equals_transformers(video_model):
    """LLaVA-NeXT's any-resolution path (base crop + tiles, unpadded grid, newline rows) through the Engine."""
    from vlm_helpers import make_image

    engine, hf, _ = video_model
    img = make_image((30, 160, 90), size=(50, 100))  # wide: a 1x2 tile grid with padding rows
    prompt = "USER: <image>\nDescribe. ASSISTANT:"
    out = engine.generate(prompt, GREEDY, image_data=img, return_logprob=True)
    processed = engine.multimodal.processor.process_image(img)
    image_token = engine.multimodal.vlm.image_token_id
    ids = []
    for tok in engine.tokenizer.encode(prompt):
        ids += [tok] * (processed.num_tokens if tok == image_token else 1)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        x = torch.tensor([ids])
        ref = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=processed.pixel_values[None],
                          image_sizes=torch.tensor([processed.image_size]), max_new_tokens=6, do_sample=False,
                          pad_token_id=0)
    assert processed.pixel_values.shape[0] > 1  # tiles beside the base crop
    assert [t for _, t, *_ in out["meta_info"]["output_token_logprobs"]] == ref[0, len(ids):].tolist()
