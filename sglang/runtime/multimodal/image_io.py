"""Images from what users send: a local path (or file:// URL), raw bytes, a PIL image, a data URL or bare
base64. Every failure is a `MultimodalInputError` (a ValueError, so HTTP 400) that says what was wrong:
missing file, undecodable or truncated data, an unsupported format, too many bytes or pixels, or an
http(s) URL (not fetched: the runtime does not reach the network; send the bytes as a data URL).
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import re
from typing import Any

MAX_IMAGE_BYTES = 32 << 20  # encoded size
MAX_IMAGE_PIXELS = 8192 * 8192  # decoded width * height; PIL's decompression-bomb guard is per-process
MAX_IMAGES_PER_REQUEST = 16
SUPPORTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")


class MultimodalInputError(ValueError):
    """A user-supplied image or video that cannot be used (the message names the reason)."""


def check_image_count(n: int, limit: int = MAX_IMAGES_PER_REQUEST) -> None:
    if n > limit:
        raise MultimodalInputError(f"too many images in one request: {n} (at most {limit})")


def load_image(src: Any, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS):
    """An RGB `PIL.Image.Image` from a path | bytes | PIL image | data URL | base64 string."""
    from PIL import Image

    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels)
        return src.convert("RGB")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return decode_image(bytes(src), "image bytes", max_bytes, max_pixels)
    if isinstance(src, os.PathLike):
        src = os.fspath(src)
    if not isinstance(src, str):
        raise MultimodalInputError(f"an image must be a path, bytes, a PIL image or a data URL, got {type(src).__name__}")
    data, what = read_image_source(src, max_bytes)
    return decode_image(data, what, max_bytes, max_pixels)


def read_image_source(src: str, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[bytes, str]:
    """The encoded bytes a string names, and how to call it in errors."""
    if src.startswith(("http://", "https://")):
        raise MultimodalInputError(
            f"image URL {src[:80]!r} is not fetched (this server does not reach the network); "
            "send the image as a data URL (data:image/png;base64,...) or a local file path"
        )
    if src.startswith("data:"):
        header, sep, payload = src.partition(",")
        if not sep or ";base64" not in header:
            raise MultimodalInputError("a data URL must look like data:image/<type>;base64,<data>")
        return _b64decode(payload, "data URL", max_bytes), "data URL"
    path = src.removeprefix("file://")
    if os.path.isfile(path):
        size = os.path.getsize(path)
        if size > max_bytes:
            raise MultimodalInputError(f"image file {path!r} is {size} bytes (at most {max_bytes})")
        with open(path, "rb") as fh:
            return fh.read(), f"image file {path!r}"
    if len(src) > 64 and _BASE64.match(src[:4096]):
        return _b64decode(src, "base64 image", max_bytes), "base64 image"
    raise MultimodalInputError(f"image file {path!r} does not exist")


def decode_image(data: bytes, what: str, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS):
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise MultimodalInputError(f"{what} is {len(data)} bytes (at most {max_bytes})")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise MultimodalInputError(
            f"{what} is not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise MultimodalInputError(f"{what} is too large: {exc}") from None
    if img.format not in SUPPORTED_FORMATS:
        raise MultimodalInputError(f"{what} has unsupported format {img.format}; supported: {', '.join(SUPPORTED_FORMATS)}")
    _check_pixels(img.size, max_pixels)  # from the header, before the pixels are decoded
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise MultimodalInputError(f"{what} is corrupt ({img.format}): {exc}") from None
    return img.convert("RGB")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise MultimodalInputError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise MultimodalInputError(f"image is {width}x{height} = {width * height} pixels (at most {max_pixels})")


def _b64decode(payload: str, what: str, max_bytes: int) -> bytes:
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise MultimodalInputError(f"{what} decodes to more than {max_bytes} bytes")
    try:
        # strict: a lenient decode drops bad characters silently and blames the image format instead
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MultimodalInputError(f"{what} is not valid base64: {exc}") from None
