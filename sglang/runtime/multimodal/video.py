"""Video frames for LLaVA-NeXT-Video: `num_frames` frames sampled evenly over the whole video, decoded with
PyAV (the `video` extra: pip install av), or decord when that is what is installed. Neither is a hard
dependency: without both, a video input fails with a `MultimodalInputError` that says what to install.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

from sglang.runtime.multimodal.image_io import MultimodalInputError

MAX_VIDEO_FRAMES = 64
MAX_VIDEO_BYTES = 512 << 20


def sample_frame_indices(total: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over [0, total), first and last frame included; every frame when
    the video is shorter."""
    if total <= 0:
        raise MultimodalInputError("the video has no frames")
    if num_frames >= total:
        return list(range(total))
    return np.linspace(0, total - 1, num_frames).round().astype(int).tolist()


def video_backend() -> str:
    """'av' or 'decord', whichever is installed (PyAV first)."""
    for name in ("av", "decord"):
        if importlib.util.find_spec(name) is not None:
            return name
    raise MultimodalInputError(
        "video input needs a video decoder: install PyAV (pip install av, or the package's [video] extra) "
        "or decord"
    )


def load_video_frames(src: Any, num_frames: int) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB frames sampled from a video file path (T = min(num_frames, frames))."""
    if not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_VIDEO_FRAMES:
        raise MultimodalInputError(f"num_frames must be an int in [1, {MAX_VIDEO_FRAMES}], got {num_frames!r}")
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str):
        raise MultimodalInputError(f"a video must be a file path, got {type(src).__name__}")
    path = src.removeprefix("file://")
    if src.startswith(("http://", "https://")):
        raise MultimodalInputError(f"video URL {src[:80]!r} is not fetched (this server does not reach the network)")
    if not os.path.isfile(path):
        raise MultimodalInputError(f"video file {path!r} does not exist")
    if os.path.getsize(path) > MAX_VIDEO_BYTES:
        raise MultimodalInputError(f"video file {path!r} is larger than {MAX_VIDEO_BYTES} bytes")
    backend = video_backend()
    try:
        frames = _decode_av(path, num_frames) if backend == "av" else _decode_decord(path, num_frames)
    except MultimodalInputError:
        raise
    except Exception as exc:  # the decoders raise their own error types for corrupt or unknown formats
        raise MultimodalInputError(f"video file {path!r} cannot be decoded ({type(exc).__name__}: {exc})") from None
    return frames


def _decode_av(path: str, num_frames: int) -> np.ndarray:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise MultimodalInputError(f"file {path!r} has no video stream")
        stream = container.streams.video[0]
        total = stream.frames
        if total <= 0:  # the container does not say: count by decoding once
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        wanted = sample_frame_indices(total, num_frames)
        keep, frames = set(wanted), {}
        for i, frame in enumerate(container.decode(stream)):
            if i in keep:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    if not frames:
        raise MultimodalInputError(f"video file {path!r} has no decodable frames")
    # a container that over-reports its frame count: repeat the last decoded frame for the missing tail
    last = frames[max(frames)]
    return np.stack([frames.get(i, last) for i in wanted])


def _decode_decord(path: str, num_frames: int) -> np.ndarray:
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    return reader.get_batch(sample_frame_indices(len(reader), num_frames)).asnumpy()
