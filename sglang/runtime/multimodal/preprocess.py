"""`MultimodalPreprocessor`: the request side of images and videos, run by the Engine in the caller's thread
with a worker pool, never on the scheduler's step.

A request's `image_data` (path | bytes | PIL image | data URL | base64, or a list of them) and `video_data`
((path, num_frames) or {"path": ..., "num_frames": ...}, or a list) are decoded, hashed and cut into crops
in parallel (`processing.MultimodalProcessor`), then placed in the prompt: each placeholder token expands to
the input's token count (`tokens.expand_placeholders`) and the radix key gets the hash-derived pad ids
(`tokens.radix_key_ids`). Bad input is a `MultimodalInputError` / ValueError naming the field (HTTP 400).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from sglang.runtime.multimodal.config import VisionLanguageConfig
from sglang.runtime.multimodal.image_io import MultimodalInputError, check_image_count
from sglang.runtime.multimodal.inputs import IMAGE, VIDEO, MultimodalItem
from sglang.runtime.multimodal.processing import MultimodalProcessor, ProcessedInput
from sglang.runtime.multimodal.tokens import expand_placeholders, radix_key_ids

PREPROCESS_WORKERS = 4  # PIL decoding and resizing release the GIL: a few threads overlap them


@dataclass
class MultimodalPrompt:
    """A prompt with its placeholders expanded: what the scheduler gets (TokenizedRequest's fields)."""

    input_ids: list[int]  # real ids (the placeholder token repeated): penalties, logprobs, detokenization
    key_ids: list[int]  # the same with per-input pad ids: the radix key and the model's input
    items: list[MultimodalItem]


def as_list(value: Any) -> list[Any]:
    """None -> [], a list/tuple -> itself, anything else -> [it] (one image)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def parse_video(entry: Any) -> tuple[Any, int]:
    """(path, num_frames) from a (path, n) pair or a {"path", "num_frames"} dict."""
    if isinstance(entry, dict) and "path" in entry:
        return entry["path"], entry.get("num_frames", 8)
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        return entry[0], entry[1]
    raise MultimodalInputError(
        f"video_data entries must be (path, num_frames) or {{'path': ..., 'num_frames': ...}}, got {type(entry).__name__}"
    )


def video_entries(video_data: Any) -> list[Any]:
    """One request's videos: a single (path, n) pair or dict is one video, otherwise a list of them."""
    if video_data is None:
        return []
    if isinstance(video_data, dict):
        return [video_data]
    if isinstance(video_data, (list, tuple)) and len(video_data) == 2 and isinstance(video_data[1], int):
        return [video_data]
    return list(video_data)


class MultimodalPreprocessor:
    def __init__(self, folder: str, vlm: VisionLanguageConfig, vocab_size: int,
                 workers: int = PREPROCESS_WORKERS) -> None:
        self.vlm = vlm
        self.vocab_size = vocab_size
        self.processor = MultimodalProcessor.from_model_path(folder, vlm)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sglang-mm")

    def prepare(self, input_ids: Sequence[int], image_data: Any, video_data: Any = None) -> MultimodalPrompt:
        images = as_list(image_data)
        videos = [parse_video(v) for v in video_entries(video_data)]
        check_image_count(len(images) + len(videos))
        if videos and self.vlm.video_token_id is None:
            raise MultimodalInputError(f"video_data: a {self.vlm.kind} model takes no videos (use a LLaVA-NeXT-Video model)")
        futures = [self.pool.submit(self.processor.process_image, src) for src in images]
        futures += [self.pool.submit(self.processor.process_video, path, n) for path, n in videos]
        processed = [f.result() for f in futures]  # the first failure raises, naming what was wrong
        ordered = self._in_prompt_order(input_ids, processed[: len(images)], processed[len(images):])
        ids, items = expand_placeholders(input_ids, ordered, self.vlm.image_token_id, self.vlm.video_token_id)
        return MultimodalPrompt(ids, radix_key_ids(ids, items, self.vocab_size), items)

    def _in_prompt_order(self, ids: Sequence[int], images: list[ProcessedInput],
                         videos: list[ProcessedInput]) -> list[ProcessedInput]:
        """Images fill the image placeholders and videos the video ones, each in order: interleaved as the
        prompt has them. A count mismatch is left to expand_placeholders, which names it."""
        queues = {IMAGE: list(images), VIDEO: list(videos)}
        kinds = {self.vlm.image_token_id: IMAGE}
        if self.vlm.video_token_id is not None:
            kinds[self.vlm.video_token_id] = VIDEO
        out: list[ProcessedInput] = []
        for tok in ids:
            kind = kinds.get(tok)
            if kind is not None and queues[kind]:
                out.append(queues[kind].pop(0))
        n_image = sum(1 for t in ids if kinds.get(t) == IMAGE)
        n_video = sum(1 for t in ids if kinds.get(t) == VIDEO)
        if len(images) != n_image:
            raise MultimodalInputError(f"image_data has {len(images)} image(s) but the prompt has {n_image} image "
                                       "placeholder(s) (one image token per image)")
        if len(videos) != n_video:
            raise MultimodalInputError(f"video_data has {len(videos)} video(s) but the prompt has {n_video} video "
                                       "placeholder(s)")
        return out

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

