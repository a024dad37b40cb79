"""Image sources in programs: what `sgl.image` accepts (a path, a data URL, base64, raw bytes or a PIL image)
as one JSON-able string, and the inlining a remote backend needs (a local file sent as a data URL, since the
server may not share this machine's files). The runtime decodes and validates them
(runtime/multimodal/image_io.py); nothing here opens an image beyond encoding one."""
from __future__ import annotations

import base64
import io
import os
from typing import Any


def image_source(src: Any) -> Any:
    """bytes / a PIL image -> a data URL; a path-like -> its string; anything else unchanged (a path, a data
    URL, base64, or a traced value the tracer handles)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "data:image/unknown;base64," + base64.b64encode(bytes(src)).decode("ascii")
    if isinstance(src, os.PathLike):
        return os.fspath(src)
    if type(src).__module__.startswith("PIL."):
        buf = io.BytesIO()
        src.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return src


def inline_local_file(src: Any) -> Any:
    """A local image path (or file:// URL) as a data URL with the file's bytes; anything else unchanged.
    A path that is not a file stays as it is, so the server's error names it."""
    if not isinstance(src, str) or src.startswith(("data:", "http://", "https://")):
        return src
    path = src.removeprefix("file://")
    if len(path) > 4096 or not os.path.isfile(path):
        return src
    with open(path, "rb") as fh:
        return image_source(fh.read())


def inline_images(image_data: Any) -> Any:
    """`inline_local_file` over a native request's image_data (one source, a list, or per-prompt lists)."""
    if isinstance(image_data, (list, tuple)):
        return [inline_images(x) for x in image_data]
    return inline_local_file(image_data)
