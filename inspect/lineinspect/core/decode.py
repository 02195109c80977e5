"""Bytes → image, with an error that says what is wrong with a bad file."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from lineinspect.errors import ImageError

# Formats lineinspect decodes, by their magic bytes.
_SIGNATURES: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"P5", "PGM"),
    (b"P6", "PPM"),
]
SUPPORTED = "PNG, JPEG, BMP, TIFF, WebP, PGM/PPM"
# Things people upload by mistake, named so the message can say what it was.
_KNOWN_OTHER: list[tuple[bytes, str]] = [
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"GIF8", "a GIF (animated formats are not supported)"),
    (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"),
    (b"\x1f\x8b", "a gzip file"),
]


def sniff_format(data: bytes) -> str | None:
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(data: bytes, *, max_pixels: int = 40_000_000, name: str = "image") -> np.ndarray:
    """Decode an encoded image to (H, W) gray or (H, W, 3) BGR uint8.

    Raises ImageError with a stable `code` and a message naming `name`.
    """
    if not data:
        raise ImageError("empty", f"{name}: the file is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        for magic, what in _KNOWN_OTHER:
            if data.startswith(magic):
                raise ImageError("unsupported_format", f"{name}: this is {what}; send {SUPPORTED}")
        if data[:4] in (b"ftyp", b"\x00\x00\x00\x18", b"\x00\x00\x00\x1c") or data[4:8] == b"ftyp":
            raise ImageError("unsupported_format", f"{name}: HEIF/HEIC/AVIF images are not supported; send {SUPPORTED}")
        raise ImageError("not_an_image", f"{name}: not an image (no known image signature); send {SUPPORTED}")
    if fmt == "PNG" and len(data) >= 24:
        # The IHDR's size, read before Pillow: it refuses a 0-wide PNG with a message naming its buffer object.
        png_width, png_height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        if png_width == 0 or png_height == 0:
            raise ImageError("corrupt", f"{name}: the PNG has no pixels ({png_width}x{png_height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
            width, height = header.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too_many_pixels", f"{name}: the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise ImageError("corrupt", f"{name}: the {fmt} header cannot be read (corrupt or truncated)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("corrupt", f"{name}: {fmt} header is corrupt: {exc}") from None
    if width * height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"{name}: {width}x{height} = {width * height / 1e6:.1f} MP is over the limit of {max_pixels / 1e6:.1f} MP",
        )
    if width == 0 or height == 0:
        raise ImageError("corrupt", f"{name}: the image has no pixels ({width}x{height})")
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise ImageError("corrupt", f"{name}: the JPEG data is truncated (no end-of-image marker)")
    if fmt in ("JPEG", "PNG", "BMP"):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR)
        if image is None:
            raise ImageError("corrupt", f"{name}: the {fmt} data is truncated or corrupt")
        return _to_uint8(image)
    return _decode_with_pillow(header, fmt, name)


def _jpeg_complete(data: bytes) -> bool:
    return data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _decode_with_pillow(image: Image.Image, fmt: str, name: str) -> np.ndarray:
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("corrupt", f"{name}: the {fmt} data is truncated or corrupt: {exc}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr16 = np.asarray(image, dtype=np.uint32)
        return (arr16 >> 8).astype(np.uint8) if arr16.max() > 255 else arr16.astype(np.uint8)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(arr)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def read_image_file(path: str, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Read and decode a file; errors name the path."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ImageError("unreadable", f"{path}: cannot read: {exc.strerror}") from None
    return decode_image(data, max_pixels=max_pixels, name=path)
