"""Multimodal inputs (images, video frames) for the vision-language models: config facts (config.py),
loading with clear errors (image_io.py, video.py), CLIP-style preprocessing and any-resolution tiling
(processing.py, anyres.py), placeholder token counts and radix-key pad ids (tokens.py), content hashing
(hashing.py), the per-request item type (inputs.py) and the feature cache by hash (feature_cache.py). Imports stay light: PIL and PyAV load on use."""
