"""The folder of good images `lineinspect teach` learns from, checked before any work starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lineinspect.core.decode import read_image_file
from lineinspect.errors import ImageError, LineinspectError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


class TeachError(LineinspectError):
    """The images or settings given to `teach` cannot make a model; the message says what to do."""


def find_good_images(folder: Path, *, minimum: int) -> list[Path]:
    """Image files directly in `folder` (by suffix), sorted by name; at least `minimum` of them."""
    if not folder.exists():
        raise TeachError(f"{folder}: folder not found; give --good a folder of images of good parts")
    if not folder.is_dir():
        raise TeachError(f"{folder}: not a folder; give --good a folder of images of good parts")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise TeachError(f"{folder}: the folder is empty; put images of good parts (PNG, JPEG, BMP, TIFF) in it")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        shown = ", ".join(p.name for p in files[:5]) + (" …" if len(files) > 5 else "")
        raise TeachError(
            f"{folder}: no image files among its {len(files)} files ({shown}); "
            f"teach reads {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    if len(images) < minimum:
        raise TeachError(
            f"{folder}: {len(images)} good image(s) found; teach needs at least {minimum} "
            "(some to learn from, some held back to set the thresholds); a few hundred work best"
        )
    return images


def read_good_images(paths: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """Decode every file; if any cannot be read, raise one error that lists them all.

    Yields (path, (H, W) gray or (H, W, 3) BGR uint8) as it goes, so the caller
    can process them one at a time; the error comes after the last good file.
    """
    failures: list[str] = []
    for path in paths:
        try:
            yield path, read_image_file(str(path))
        except ImageError as exc:
            failures.append(f"  {exc}")
    if failures:
        raise TeachError(
            f"{len(failures)} of {len(paths)} image(s) cannot be read; remove or replace them:\n" + "\n".join(failures)
        )
