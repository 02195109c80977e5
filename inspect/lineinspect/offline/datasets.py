"""Labelled image folders for `lineinspect evaluate`: good parts, defective parts and their masks.

Layouts read (the defect class is the first sub-folder under `--defects`,
without an `MT_` prefix; images directly in `--defects` take its folder name):

- generic: `<class>/<name>.png|jpg` with the mask as `<name>_mask.png` beside
  it, or in a `masks/` folder beside it (`masks/<name>.png`);
- the project's samples (`lineinspect samples`): `defective/<name>.png` with
  `masks/<name>.png` next to the `defective/` folder;
- magnetic tile (Huang, Qiu & Yuan 2020): `MT_<Class>/Imgs/<name>.jpg` with
  `<name>.png` beside it.

A mask is a grayscale image of the same size as its image; pixels above 127
are defect. A defective image without a mask still counts in the image-level
figures (it is defective because of where it lies); it is left out of the
pixel-level ones, and the report counts how many were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.decode import read_image_file
from lineinspect.errors import ImageError, LineinspectError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
MASKS_FOLDER = "masks"
MASK_SUFFIX = "_mask"
MASK_LEVEL = 127  # masks may have soft edges; above this is defect
GOOD_CLASS = "good"


class DatasetError(LineinspectError):
    """A folder given to `evaluate` cannot be read as labelled images; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class LabelledImage:
    """One image with its truth. class_name is `good` for good parts; mask_path None where no mask exists."""

    path: Path
    class_name: str
    mask_path: Path | None = None

    @property
    def defective(self) -> bool:
        return self.class_name != GOOD_CLASS


def find_good(folder: Path) -> list[LabelledImage]:
    """Every image under `folder` (recursively, masks left out), labelled good."""
    return [LabelledImage(p, GOOD_CLASS) for p in _images_under(folder, "--good")]


def find_defects(folder: Path, *, exclude: Path | None = None) -> list[LabelledImage]:
    """Every image under `folder` (masks left out) with its class and mask file.

    exclude: a folder whose images are not defects (the `--good` folder, when it
    lies inside `--defects`, as `MT_Free` does in the magnetic-tile set).
    """
    skip = exclude.resolve() if exclude is not None else None
    if skip is not None and folder.resolve() == skip:
        raise DatasetError(f"--defects {folder}: this is the --good folder; give the folder of defective images")
    found = []
    for path in _images_under(folder, "--defects", skip=skip):
        found.append(LabelledImage(path, _class_of(path, folder), _mask_of(path)))
    if not found:
        raise DatasetError(f"{folder}: no defective images found (the only images in it are the --good ones)")
    return found


def read_labelled(item: LabelledImage) -> tuple[np.ndarray, np.ndarray | None]:
    """(image (H, W) gray or (H, W, 3) BGR uint8, mask (H, W) bool or None).

    Good images get an all-False mask: every pixel of a good part is a good pixel.
    """
    try:
        image = read_image_file(str(item.path))
    except ImageError as exc:
        raise DatasetError(f"{exc}; remove or replace the file") from None
    h, w = image.shape[:2]
    if not item.defective:
        return image, np.zeros((h, w), bool)
    if item.mask_path is None:
        return image, None
    mask = cv2.imread(str(item.mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"{item.mask_path}: cannot read the mask of {item.path.name}; give a grayscale PNG")
    if mask.shape != (h, w):
        raise DatasetError(
            f"{item.mask_path}: the mask is {mask.shape[1]}x{mask.shape[0]} px but its image {item.path} "
            f"is {w}x{h} px; a mask must be the same size as its image"
        )
    return image, mask > MASK_LEVEL


def _images_under(folder: Path, option: str, skip: Path | None = None) -> list[Path]:
    if not folder.exists():
        raise DatasetError(f"{option} {folder}: folder not found")
    if not folder.is_dir():
        raise DatasetError(f"{option} {folder}: not a folder; give a folder of images")
    images = sorted(p for p in _walk(folder, skip) if not _is_mask(p))
    if not images:
        raise DatasetError(
            f"{option} {folder}: no images in it (read: {', '.join(sorted(IMAGE_SUFFIXES))}, in sub-folders too)"
        )
    return images


def _walk(folder: Path, skip: Path | None) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name != MASKS_FOLDER and (skip is None or path.resolve() != skip):
                yield from _walk(path, skip)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def _is_mask(path: Path) -> bool:
    if path.stem.endswith(MASK_SUFFIX):
        return True
    # Magnetic tile: name.png beside name.jpg is the mask of the JPEG.
    return path.suffix.lower() == ".png" and any(
        path.with_suffix(s).is_file() for s in (".jpg", ".jpeg", ".JPG", ".JPEG")
    )


def _mask_of(path: Path) -> Path | None:
    candidates = [
        path.with_name(f"{path.stem}{MASK_SUFFIX}.png"),
        path.parent / MASKS_FOLDER / f"{path.stem}.png",
        path.parent.parent / MASKS_FOLDER / f"{path.stem}.png",
    ]
    if path.suffix.lower() != ".png":
        candidates.insert(0, path.with_suffix(".png"))
    return next((c for c in candidates if c.is_file()), None)


def _class_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    top = parts[0] if len(parts) > 1 else root.resolve().name
    return top.removeprefix("MT_")
