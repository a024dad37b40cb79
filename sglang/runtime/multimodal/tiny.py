"""A tiny random llava-1.5 saved as an HF folder (transformers' layout) with a tokenizer that knows
"<image>": what the examples and tests serve on a CPU without a real vision-language model. Its answers
are noise; its shapes, token layout and cache behaviour are a real LLaVA's."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

TINY_CROP = 56  # px: a 4x4 grid of 14-px patches, 16 image tokens per image
TINY_VOCAB = 49216  # SmolLM2's 49152 ids, "<image>" and room to spare
WEIGHT_SCALE = 4.0  # larger than HF's init: outputs then depend strongly on the image


def build_tiny_llava(folder: Union[str, Path], tokenizer_src: str, seed: int = 0, video: bool = False) -> tuple[Any, int]:
    """Save a random tiny LlavaForConditionalGeneration (CLIP tower, Llama text model) and `tokenizer_src`'s
    tokenizer plus an "<image>" token into `folder`; returns (the HF model, the image token id).
    video=True: a LlavaNextVideoForConditionalGeneration instead, whose tokenizer also knows "<video>"."""
    import torch
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(tokenizer_src, local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"] if video else ["<image>"]})
    image_token = tok.convert_tokens_to_ids("<image>")
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 image_size=TINY_CROP, patch_size=14, projection_dim=16)
    text = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=TINY_VOCAB, max_position_embeddings=1024,
                          rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    if video:
        cfg = tf.LlavaNextVideoConfig(vision_config=vision, text_config=text, image_token_id=image_token,
                                      video_token_id=tok.convert_tokens_to_ids("<video>"),
                                      image_grid_pinpoints=[[TINY_CROP, 2 * TINY_CROP], [2 * TINY_CROP, TINY_CROP]])
        model = tf.LlavaNextVideoForConditionalGeneration(cfg).eval()
    else:
        model = tf.LlavaForConditionalGeneration(
            tf.LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(WEIGHT_SCALE)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, image_token
