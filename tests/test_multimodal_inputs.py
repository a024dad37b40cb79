"""Multimodal inputs: image loading from every accepted source with clear errors for bad input,
preprocessing equal to transformers' LLaVA / LLaVA-NeXT image processors, any-resolution arithmetic equal
to transformers', content hashes, placeholder expansion and radix keys, and video frame sampling."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch

from sglang.runtime.multimodal import anyres
from sglang.runtime.multimodal.config import parse_vision_language_config
from sglang.runtime.multimodal.image_io import MultimodalInputError, check_image_count, load_image
from sglang.runtime.multimodal.processing import MultimodalProcessor, ProcessorConfig
from vlm_helpers import write_video
from sglang.runtime.multimodal.tokens import expand_placeholders, image_token_count, radix_key_ids, video_token_count

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

PINS = [[56, 112], [112, 56], [112, 112], [56, 168]]


def vlm_config(kind: str = "llava_next", **extra):
    arch = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration",
            "llava_next_video": "LlavaNextVideoForConditionalGeneration"}[kind]
    cfg = {"architectures": [arch], "image_token_index": 250, "video_token_index": 251,
           "image_grid_pinpoints": PINS, "vision_config": {"model_type": "clip_vision_model", "hidden_size": 32,
           "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 56,
           "patch_size": 14}, **extra}
    return parse_vision_language_config(cfg, "LlamaForCausalLM")


def random_image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# -- loading ----------------------------------------------------------------------------------------
def test_every_source_gives_the_same_pixels_and_hash(tmp_path):
    img = random_image(30, 50)
    data = png_bytes(img)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    sources = [str(path), f"file://{path}", path, data, img, f"data:image/png;base64,{b64}", b64]
    proc = MultimodalProcessor(vlm_config("llava"))
    hashes = set()
    for src in sources:
        loaded = load_image(src)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), np.asarray(img)), type(src)
        hashes.add(proc.process_image(src).hash)
    assert len(hashes) == 1
    changed = np.asarray(img).copy()
    changed[3, 4, 0] ^= 1  # one pixel, one bit
    assert proc.process_image(Image.fromarray(changed)).hash not in hashes


@pytest.mark.parametrize("src,match", [
    ("http://example.com/cat.png", "not fetched"),
    ("https://example.com/cat.png", "not fetched"),
    ("/no/such/image.png", "does not exist"),
    (b"definitely not an image", "not an image in a supported format"),
    ("data:image/png,rawdata", "data URL must look like"),
    (12345, "must be a path, bytes"),
])
def test_bad_sources_are_clear_errors(src, match):
    with pytest.raises(MultimodalInputError, match=match):
        load_image(src)


def test_corrupt_unsupported_and_too_large_images(tmp_path):
    data = png_bytes(random_image(64, 64))
    with pytest.raises(MultimodalInputError, match="corrupt"):
        load_image(data[: len(data) // 2])  # a truncated PNG: the header parses, the pixels do not
    ppm = b"P6\n2 2\n255\n" + bytes(12)  # a format PIL reads but we do not accept
    with pytest.raises(MultimodalInputError, match="unsupported format PPM"):
        load_image(ppm)
    with pytest.raises(MultimodalInputError, match="pixels"):
        load_image(data, max_pixels=64 * 63)
    with pytest.raises(MultimodalInputError, match="bytes"):
        load_image(data, max_bytes=100)
    big = tmp_path / "big.png"
    big.write_bytes(data)
    with pytest.raises(MultimodalInputError, match="bytes"):
        load_image(str(big), max_bytes=100)
    check_image_count(16)
    with pytest.raises(MultimodalInputError, match="too many images"):
        check_image_count(17)
    assert issubclass(MultimodalInputError, ValueError)  # the servers answer ValueError with a 400


# -- preprocessing equals transformers' -----------------------------------------------------------
@pytest.mark.parametrize("size", [(40, 40), (30, 90), (120, 45)])
def test_llava_preprocessing_matches_transformers(size):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    img = random_image(*size, seed=1)
    ref = LlavaImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    want = ref(img, return_tensors="pt")["pixel_values"]
    got = MultimodalProcessor(vlm_config("llava")).process_image(img)
    assert got.pixel_values.shape == want.shape == (1, 3, 56, 56)
    assert (got.pixel_values - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("size", [(40, 100), (100, 37), (90, 90), (33, 150), (200, 20)])
def test_llava_next_preprocessing_matches_transformers(size):
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    img = random_image(*size, seed=2)
    ref = LlavaNextImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56},
                                     image_grid_pinpoints=PINS)
    out = ref(img, return_tensors="pt")
    got = MultimodalProcessor(vlm_config()).process_image(img)
    want = out["pixel_values"][0]
    assert got.image_size == tuple(out["image_sizes"][0].tolist()) == size
    assert got.pixel_values.shape == want.shape
    assert got.pixel_values.shape[0] == anyres.num_crops(size, PINS, 56)
    assert (got.pixel_values - want).abs().max().item() < 1e-5


def test_anyres_arithmetic_matches_transformers():
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.llava_next.modeling_llava_next import unpad_image

    for h in range(7, 400, 23):
        for w in range(5, 400, 29):
            assert anyres.select_best_resolution((h, w), PINS) == tuple(select_best_resolution((h, w), PINS))
            rows, cols = anyres.grid_shape((h, w), PINS, 56)
            gh, gw = rows * 4, cols * 4
            top, bottom, left, right = anyres.unpadded_grid((h, w), gh, gw)
            assert unpad_image(torch.zeros(1, gh, gw), (h, w)).shape[1:] == (bottom - top, right - left)


def test_processor_config_reads_preprocessor_json(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(
        '{"size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}, "image_mean": [0.5, 0.5, 0.5],'
        ' "image_std": [0.25, 0.25, 0.25], "do_pad": true}')
    cfg = ProcessorConfig.for_model(vlm_config("llava"), str(tmp_path))
    assert (cfg.shortest_edge, cfg.crop_size, cfg.image_mean, cfg.image_std, cfg.do_pad) == (
        64, 56, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True)
    default = ProcessorConfig.for_model(vlm_config("llava"), str(tmp_path / "none"))
    assert default.shortest_edge == default.crop_size == 56 and default.image_mean[0] == pytest.approx(0.4815, abs=1e-4)
    # do_pad (llava-1.5's pad-to-square) keeps the whole image: a wide image's crop has mean-colour bands
    # (the mean truncated to uint8, as the original LLaVA fills: within one grey level of 0 after normalising)
    wide = Image.new("RGB", (112, 28), (255, 0, 0))
    crop = MultimodalProcessor(vlm_config("llava"), cfg).process_image(wide).pixel_values[0]
    assert crop[0, 0, 28].item() == pytest.approx(0.0, abs=0.01) and crop[0, 28, 28].item() == pytest.approx(2.0)


# -- tokens -----------------------------------------------------------------------------------------
def test_expand_placeholders_and_radix_keys():
    vlm = vlm_config()
    proc = MultimodalProcessor(vlm)
    a, b = proc.process_image(random_image(40, 100, 3)), proc.process_image(random_image(90, 90, 4))
    assert a.num_tokens == image_token_count(vlm, (40, 100)) != b.num_tokens
    ids, items = expand_placeholders([1, 2, 250, 3, 250, 4], [a, b], 250)
    assert [(it.offset, it.num_tokens) for it in items] == [(2, a.num_tokens), (3 + a.num_tokens, b.num_tokens)]
    assert len(ids) == 4 + a.num_tokens + b.num_tokens and ids.count(250) == a.num_tokens + b.num_tokens
    key = radix_key_ids(ids, items, vocab_size=256)
    assert all(k >= 256 for k in key[2 : 2 + a.num_tokens]) and key[:2] == [1, 2] and key[-1] == 4
    assert key[2] != key[3 + a.num_tokens]  # different images: different keys
    same = expand_placeholders([1, 2, 250, 3, 250, 4], [a, proc.process_image(random_image(40, 100, 3))], 250)
    key2 = radix_key_ids(*same, vocab_size=256)
    assert key2[: 3 + a.num_tokens] == key[: 3 + a.num_tokens] and key2 != key  # shared prefix up to image 2
    with pytest.raises(ValueError, match="more image placeholders"):
        expand_placeholders([250, 250], [a], 250)
    with pytest.raises(ValueError, match="2 images/videos given"):
        expand_placeholders([250], [a, b], 250)


# -- video ------------------------------------------------------------------------------------------
def test_video_frames_sampled_evenly(tmp_path):
    from sglang.runtime.multimodal.video import load_video_frames, sample_frame_indices

    assert sample_frame_indices(10, 4) == [0, 3, 6, 9] and sample_frame_indices(3, 8) == [0, 1, 2]
    path = tmp_path / "v.mp4"
    write_video(path)
    frames = load_video_frames(str(path), 4)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    assert np.abs(frames[:, 20, 30, 0].astype(int) - np.array([0, 75, 150, 225])).max() <= 6  # lossy codec
    vlm = vlm_config("llava_next_video")
    got = MultimodalProcessor(vlm).process_video(str(path), 4)
    assert got.pixel_values.shape == (4, 3, 56, 56) and got.num_tokens == 4 * 2 * 2
    assert got.hash != MultimodalProcessor(vlm).process_video(str(path), 3).hash


def test_video_errors(tmp_path, monkeypatch):
    from sglang.runtime.multimodal import video

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(MultimodalInputError, match="cannot be decoded|no video stream|no frames"):
        video.load_video_frames(str(bad), 4)
    with pytest.raises(MultimodalInputError, match="does not exist"):
        video.load_video_frames(str(tmp_path / "nope.mp4"), 4)
    with pytest.raises(MultimodalInputError, match="num_frames"):
        video.load_video_frames(str(bad), 0)
    with pytest.raises(ValueError, match="do not take videos"):
        video_token_count(vlm_config("llava_next"), 4)
    monkeypatch.setattr(video.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MultimodalInputError, match="pip install av"):
        video.load_video_frames(str(bad), 4)
