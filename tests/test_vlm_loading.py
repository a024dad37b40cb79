"""Vision-language model configs and weights: published configs (partial text/vision configs) give the
published shapes, checkpoints in transformers' old and new Llava layouts load to the same model, dummy
weights run, and unsupported parts are named in the error."""
from __future__ import annotations

import copy

import pytest
import torch

from sglang.runtime.model_config import ModelConfig
from sglang.runtime.model_loader.loader import build_model
from sglang.runtime.multimodal.inputs import IMAGE, VIDEO, MultimodalItem
from sglang.runtime.multimodal.tokens import image_token_count, video_token_count

from vlm_helpers import CROP, IMAGE_TOKEN, Seq, build_hf, forward, runner_for

_CLIP_L_336 = {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
               "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
               "vocab_size": 32000}
_PINS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# the config.json files of llava-hf/llava-1.5-7b-hf, llava-v1.6-mistral-7b-hf and LLaVA-NeXT-Video-7B-hf
PUBLISHED = {
    "llava-1.5-7b": {
        "architectures": ["LlavaForConditionalGeneration"], "image_token_index": 32000, "model_type": "llava",
        "pad_token_id": 32001, "projector_hidden_act": "gelu", "tie_word_embeddings": False, "torch_dtype": "float16",
        "text_config": {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096, "model_type": "llama",
                        "rms_norm_eps": 1e-05, "torch_dtype": "float16", "vocab_size": 32064},
        "vision_config": _CLIP_L_336, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
        "vocab_size": 32064},
    "llava-v1.6-mistral-7b": {
        "architectures": ["LlavaNextForConditionalGeneration"], "image_grid_pinpoints": _PINS,
        "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
        "text_config": {"architectures": ["MistralForCausalLM"], "intermediate_size": 14336,
                        "max_position_embeddings": 32768, "model_type": "mistral", "num_key_value_heads": 8,
                        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
                        "torch_dtype": "bfloat16", "vocab_size": 32064},
        "torch_dtype": "float16", "use_image_newline_parameter": True, "vision_config": _CLIP_L_336,
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064},
    "LLaVA-NeXT-Video-7B": {
        "architectures": ["LlavaNextVideoForConditionalGeneration"], "image_grid_pinpoints": _PINS,
        "image_token_index": 32001, "model_type": "llava_next_video", "projector_hidden_act": "gelu",
        "spatial_pool_mode": "average", "spatial_pool_stride": 2, "tie_word_embeddings": False,
        "text_config": {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 4096, "model_type": "llama",
                        "pad_token_id": 0, "rms_norm_eps": 1e-05, "torch_dtype": "bfloat16", "vocab_size": 32064},
        "video_token_index": 32000, "vision_config": _CLIP_L_336, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "vocab_size": 32064},
}


def hf_param_count(cfg: dict) -> int:
    """Parameters of transformers' model for `cfg` (built on the meta device), less the ones LLaVA never
    uses: the vision tower's post-layernorm (hidden states are read before it)."""
    import transformers as tf

    config = tf.AutoConfig.for_model(**copy.deepcopy(cfg))
    model_cls = getattr(tf, cfg["architectures"][0])
    with torch.device("meta"):
        model = model_cls(config)
    return sum(p.numel() for n, p in model.named_parameters() if "post_layernorm" not in n)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_configs_give_published_shapes(name):
    cfg = ModelConfig.from_dict(PUBLISHED[name])
    assert cfg.architecture == PUBLISHED[name]["architectures"][0] and cfg.is_multimodal
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.vocab_size) == (4096, 32, 32, 32064)
    assert cfg.dtype == torch.float16 if name == "llava-1.5-7b" else cfg.dtype == torch.bfloat16
    vlm = cfg.vision
    assert (vlm.vision.hidden_size, vlm.vision.num_layers, vlm.vision.image_size, vlm.tokens_per_crop) == (1024, 24, 336, 576)
    model = build_model(cfg, torch.float16, torch.device("meta"))
    ours = sum(p.numel() for p in model.parameters())
    assert ours == hf_param_count(PUBLISHED[name])
    assert 7.0e9 < ours < 7.6e9
    # any-res 480x640: canvas 672x672 = 48x48 features, 36 rows of them show the image, each + a newline
    assert image_token_count(vlm, (480, 640)) == (576 if name == "llava-1.5-7b" else 576 + 36 * (48 + 1))
    if name == "LLaVA-NeXT-Video-7B":
        assert vlm.video_token_id == 32000 and video_token_count(vlm, 8) == 8 * 12 * 12


def test_unsupported_parts_are_named():
    base = PUBLISHED["llava-1.5-7b"]
    bad_vision = {**base, "vision_config": {**_CLIP_L_336, "model_type": "pixtral"}}
    with pytest.raises(ValueError, match="pixtral"):
        ModelConfig.from_dict(bad_vision)
    bad_text = {**base, "text_config": {"model_type": "gpt2"}}
    with pytest.raises(ValueError, match="gpt2"):
        ModelConfig.from_dict(bad_text)
    with pytest.raises(ValueError, match="LlavaForConditionalGeneration"):  # the supported list names VLMs
        ModelConfig.from_dict({"architectures": ["Blip2ForConditionalGeneration"]})


def _image_prompt(vlm, gen):
    n = image_token_count(vlm, (40, 90))
    ids = [1, 5, 9] + [IMAGE_TOKEN] * n + [7, 8]
    crops = 3 if vlm.anyres else 1
    pixels = torch.randn(crops, 3, CROP, CROP, generator=gen)
    return ids, MultimodalItem(IMAGE, 3, n, hash=1, pixel_values=pixels, image_size=(40, 90))


def test_new_checkpoint_layout_loads_the_same_model(tmp_path):
    """transformers' newer key names (model.language_model.*, model.vision_tower.vision_model.*, top-level
    lm_head) and the unused tensors (post_layernorm) load into the same model as the old layout."""
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    build_hf("llava_next", old)
    state = load_file(str(old / "model.safetensors"))
    renamed = {}
    for k, v in state.items():
        if k.startswith("language_model.model."):
            k = "model.language_model." + k.removeprefix("language_model.model.")
        elif k == "language_model.lm_head.weight":
            k = "lm_head.weight"
        elif k.startswith("vision_tower."):
            k = "model.vision_tower.vision_model." + k.removeprefix("vision_tower.").removeprefix("vision_model.")
        else:
            k = "model." + k
        renamed[k] = v.clone()
    assert any("post_layernorm" in k for k in renamed)
    new = tmp_path / "new"
    new.mkdir()
    save_file(renamed, str(new / "model.safetensors"))
    (new / "config.json").write_text((old / "config.json").read_text())
    logits = []
    for folder in (old, new):
        runner = runner_for(str(folder))
        ids, item = _image_prompt(runner.model_config.vision, torch.Generator().manual_seed(0))
        logits.append(forward(runner, [Seq(runner)], [ids], [[item]]).next_token_logits)
    assert torch.equal(logits[0], logits[1])
    del renamed["model.image_newline"]
    save_file(renamed, str(new / "model.safetensors"))
    with pytest.raises(ValueError, match="image_newline"):
        runner_for(str(new))


def test_dummy_weights_run_images_and_video(tmp_path):
    build_hf("llava_next_video", tmp_path)
    (tmp_path / "model.safetensors").unlink()  # dummy weights need only config.json
    from sglang.runtime.model_runner import ModelRunner
    from sglang.runtime.server_args import ServerArgs

    outs = []
    for _ in range(2):
        runner = ModelRunner(ServerArgs(model_path=str(tmp_path), device="cpu", dtype="float32", load_format="dummy",
                                        max_total_tokens=2048, max_running_requests=4))
        vlm = runner.model_config.vision
        gen = torch.Generator().manual_seed(0)
        ids, image = _image_prompt(vlm, gen)
        nv = video_token_count(vlm, 2)
        video = MultimodalItem(VIDEO, len(ids), nv, hash=2, pixel_values=torch.randn(2, 3, CROP, CROP, generator=gen))
        ids = ids + [251] * nv + [3]
        outs.append(forward(runner, [Seq(runner)], [ids], [[image, video]]).next_token_logits)
    assert torch.isfinite(outs[0]).all() and torch.equal(outs[0], outs[1])  # seeded: same weights each time
