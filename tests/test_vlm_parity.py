"""Our LLaVA / LLaVA-NeXT / LLaVA-NeXT-Video equal transformers' on tiny random models (fp32, CPU): log-probs
at every prompt position within 1e-3 for single- and multi-image prompts, and greedy tokens equal. The
weights go through an HF folder (save_pretrained -> our loader), and our token counts must match the
placeholder counts transformers accepts."""
from __future__ import annotations

import pytest
import torch

from sglang.runtime.multimodal.anyres import num_crops
from sglang.runtime.multimodal.inputs import IMAGE, VIDEO, MultimodalItem
from sglang.runtime.multimodal.tokens import image_token_count, radix_key_ids, video_token_count

from vlm_helpers import CROP, IMAGE_TOKEN, PINPOINTS, VIDEO_TOKEN, Seq, all_logprobs, build_hf, forward, greedy, runner_for

TOL = 1e-3
NEW_TOKENS = 8


def prompt_with(runs: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Text tokens around each (placeholder id, count) run; returns ids and each run's offset."""
    ids, offsets = [1, 17, 23], []
    for k, (tok, n) in enumerate(runs):
        offsets.append(len(ids))
        ids += [tok] * n + [30 + k, 41 + k]
    return ids + [99, 7], offsets


def image_items(vlm, sizes, offsets, gen) -> list[MultimodalItem]:
    items = []
    for k, (size, off) in enumerate(zip(sizes, offsets)):
        crops = num_crops(size, PINPOINTS, CROP) if vlm.anyres else 1
        items.append(MultimodalItem(IMAGE, off, image_token_count(vlm, size), hash=k,
                                    pixel_values=torch.randn(crops, 3, CROP, CROP, generator=gen), image_size=size))
    return items


def hf_logprobs(hf, ids, **kw) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(hf(input_ids=torch.tensor([ids]), **kw).logits[0].float(), dim=-1)


def hf_greedy(hf, ids, **kw) -> list[int]:
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        x = torch.tensor([ids])
        out = hf.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                          do_sample=False, pad_token_id=0, **kw)
    return out[0, len(ids):].tolist()


def hf_image_kwargs(vlm, items) -> dict:
    if not vlm.anyres:
        return {"pixel_values": torch.cat([it.pixel_values for it in items])}
    most = max(it.pixel_values.shape[0] for it in items)
    padded = [torch.cat([it.pixel_values, it.pixel_values.new_zeros(most - it.pixel_values.shape[0], 3, CROP, CROP)])
              for it in items]
    return {"pixel_values": torch.stack(padded), "image_sizes": torch.tensor([it.image_size for it in items])}


def check_parity(runner, hf, ids, items, hf_kw) -> None:
    ours = all_logprobs(runner, ids, items)
    ref = hf_logprobs(hf, ids, **hf_kw)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= TOL
    for it in items:  # fresh items: the features are recomputed in the greedy prefill
        it.features = None
    assert greedy(runner, ids, items, NEW_TOKENS) == hf_greedy(hf, ids, **hf_kw)


CASES = [  # (kind, vision tower, text model, extra config, image sizes (h, w))
    ("llava", "clip", "llama", {}, [(40, 40)]),
    ("llava", "clip", "llama", {}, [(40, 40), (30, 60)]),
    ("llava", "siglip", "qwen2", {"vision_feature_select_strategy": "full", "vision_feature_layer": [-3, -1]},
     [(50, 20), (20, 50)]),
    ("llava", "siglip", "llama", {}, [(40, 40)]),  # "default" on SigLIP drops a patch, as transformers does
    ("llava_next", "clip", "llama", {}, [(40, 100)]),
    ("llava_next", "clip", "mistral", {"vision_feature_layer": [-2, -1]}, [(100, 37), (90, 90), (33, 150)]),
    ("llava_next", "siglip", "qwen2", {"vision_feature_select_strategy": "full", "vision_feature_layer": -1},
     [(60, 130)]),
]


@pytest.mark.parametrize("kind,vision,text,extra,sizes", CASES, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_images_match_transformers(tmp_path, kind, vision, text, extra, sizes):
    hf = build_hf(kind, tmp_path, vision=vision, text=text, **extra)
    runner = runner_for(str(tmp_path))
    vlm = runner.model_config.vision
    assert vlm.kind == kind and vlm.vision.model_type.startswith(vision)
    gen = torch.Generator().manual_seed(1)
    counts = [image_token_count(vlm, s) for s in sizes]
    ids, offsets = prompt_with([(IMAGE_TOKEN, n) for n in counts])
    items = image_items(vlm, sizes, offsets, gen)
    check_parity(runner, hf, ids, items, hf_image_kwargs(vlm, items))


def test_video_and_image_match_transformers(tmp_path):
    hf = build_hf("llava_next_video", tmp_path)
    runner = runner_for(str(tmp_path))
    vlm = runner.model_config.vision
    gen = torch.Generator().manual_seed(2)
    frames, size = 3, (70, 45)
    ids, (img_off, vid_off) = prompt_with([(IMAGE_TOKEN, image_token_count(vlm, size)),
                                           (VIDEO_TOKEN, video_token_count(vlm, frames))])
    image = image_items(vlm, [size], [img_off], gen)[0]
    video = MultimodalItem(VIDEO, vid_off, video_token_count(vlm, frames), hash=9,
                           pixel_values=torch.randn(frames, 3, CROP, CROP, generator=gen))
    hf_kw = hf_image_kwargs(vlm, [image])
    hf_kw["pixel_values_videos"] = video.pixel_values[None]
    check_parity(runner, hf, ids, [image, video], hf_kw)


def test_the_image_matters_and_prefix_reuse_matches(tmp_path):
    """Parity is not vacuous (other pixels -> other logits), radix-key pad ids work as placeholders, and a
    prompt split in two forwards at a point inside the image (the first part then a cached prefix) gives the
    one-forward logits."""
    hf = build_hf("llava_next", tmp_path)
    runner = runner_for(str(tmp_path))
    vlm = runner.model_config.vision
    gen = torch.Generator().manual_seed(3)
    size = (40, 100)
    ids, offsets = prompt_with([(IMAGE_TOKEN, image_token_count(vlm, size))])
    item = image_items(vlm, [size], offsets, gen)[0]
    whole = forward(runner, [Seq(runner)], [ids], [[item]]).next_token_logits
    # the radix-key ids (per-image pad ids past the vocabulary) are read as placeholders too
    keyed = forward(runner, [Seq(runner)], [radix_key_ids(ids, [item], runner.model_config.vocab_size)], [[item]])
    assert torch.equal(keyed.next_token_logits, whole)
    other = image_items(vlm, [size], offsets, gen)[0]
    changed = forward(runner, [Seq(runner)], [ids], [[other]]).next_token_logits
    assert (whole - changed).abs().max().item() > 100 * TOL
    fresh = MultimodalItem(IMAGE, item.offset, item.num_tokens, item.hash, pixel_values=item.pixel_values,
                           image_size=size)
    cut = item.offset + item.num_tokens // 2
    seq = Seq(runner)
    forward(runner, [seq], [ids[:cut]], [[fresh]])
    split = forward(runner, [seq], [ids[cut:]], [[fresh]]).next_token_logits
    assert (split - whole).abs().max().item() <= TOL


def test_batched_rows_with_and_without_images(tmp_path):
    """A ragged batch: a text-only row and two image rows give each row's single-request logits."""
    build_hf("llava", tmp_path)
    runner = runner_for(str(tmp_path))
    vlm = runner.model_config.vision
    gen = torch.Generator().manual_seed(4)
    n = image_token_count(vlm)
    ids_a, off_a = prompt_with([(IMAGE_TOKEN, n)])
    ids_b, off_b = prompt_with([(IMAGE_TOKEN, n), (IMAGE_TOKEN, n)])
    text = [1, 5, 9, 14]
    a, b = image_items(vlm, [None], off_a, gen), image_items(vlm, [None, None], off_b, gen)
    alone = [forward(runner, [Seq(runner)], [i], [m]).next_token_logits[0] for i, m in [(ids_a, a), (ids_b, b)]]
    alone.append(forward(runner, [Seq(runner)], [text]).next_token_logits[0])
    batched = forward(runner, [Seq(runner) for _ in range(3)], [ids_a, ids_b, text], [a, b, None]).next_token_logits
    for row, want in enumerate(alone):
        assert (batched[row] - want).abs().max().item() <= TOL


def test_one_vision_tower_call_per_forward_and_cached_features(tmp_path):
    """All images of all rows go through the vision tower in one call; items whose features come from the
    FeatureCache (same content hash) skip it and give the same logits."""
    from sglang.runtime.multimodal.feature_cache import FeatureCache

    build_hf("llava_next", tmp_path)
    runner = runner_for(str(tmp_path))
    vlm = runner.model_config.vision
    calls = []
    runner.model.vision_tower.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    gen = torch.Generator().manual_seed(5)
    sizes_a, sizes_b = [(40, 100)], [(90, 90), (100, 37)]
    ids_a, off_a = prompt_with([(IMAGE_TOKEN, image_token_count(vlm, s)) for s in sizes_a])
    ids_b, off_b = prompt_with([(IMAGE_TOKEN, image_token_count(vlm, s)) for s in sizes_b])
    a, b = image_items(vlm, sizes_a, off_a, gen), image_items(vlm, sizes_b, off_b, gen)
    first = forward(runner, [Seq(runner), Seq(runner)], [ids_a, ids_b], [a, b]).next_token_logits
    assert calls == [sum(it.pixel_values.shape[0] for it in a + b)]
    cache = FeatureCache(max_bytes=1 << 24)
    cache.store(a + b)
    again = [MultimodalItem(IMAGE, it.offset, it.num_tokens, it.hash, pixel_values=it.pixel_values,
                            image_size=it.image_size) for it in b]
    cache.fill(again)
    assert cache.hits == 2 and all(it.features is not None for it in again)
    second = forward(runner, [Seq(runner)], [ids_b], [again]).next_token_logits
    assert len(calls) == 1 and (second[0] - first[1]).abs().max().item() <= TOL


def test_feature_cache_evicts_least_recently_used():
    from sglang.runtime.multimodal.feature_cache import FeatureCache

    cache = FeatureCache(max_bytes=3 * 64)  # three [4, 4] fp32 entries
    for k in range(3):
        cache.put(k, torch.full((4, 4), float(k)))
    assert cache.get(0) is not None  # 0 is now the most recent: 1 goes first
    cache.put(3, torch.zeros(4, 4))
    assert cache.get(1) is None and cache.get(0) is not None and len(cache) == 3 and cache.used_bytes == 192
    cache.put(9, torch.zeros(100))  # over the whole budget: not cached, nothing evicted
    assert cache.get(9) is None and len(cache) == 3
