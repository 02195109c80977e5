"""Synthetic sample parts with ground truth: `lineinspect samples`.

Each image shows one machined bracket (a brushed-aluminium plate with four
mounting holes and a slot) lying in a fixture on a ribbed conveyor belt, as a
line camera sees it: the part sits within a few pixels and about a degree of
its nominal pose, the lighting has a gradient and a brightness that drift
from part to part, the sensor adds noise, and every plate has its own

brushed texture. Defective parts carry one or two defects drawn on the
plate's face:

- ``scratch``: a thin bright or dark curved line,
- ``dent``: a shallow depression (shaded by the light) or a dark pit,
- ``crack``: a dark line that wanders and branches,
- ``contamination``: an oil or grease stain with an irregular outline.

Each defect's pixels are known exactly, so every defective image comes with a
ground-truth mask (PNG, 255 = defect) and its boxes in ``manifest.json``.
Images are reproducible: image *i* of a label depends only on (seed, label,
i), so a larger set starts with the same images as a smaller one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lineinspect.core.clock import utc_now_iso

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "dent", "crack", "contamination")
MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = "lineinspect.samples/1"
# Defects range from faint to plain: their contrast is scaled by a severity drawn from this range.
SEVERITY_RANGE = (0.3, 1.0)
NOMINAL_WIDTH = 640  # sizes below are in pixels at this width and scale with the image
_LABEL_CODE = {"good": 0, "defective": 1}


@dataclass(frozen=True, slots=True)
class DefectTruth:
    """One drawn defect. box: x0, y0, x1, y1 in image pixels (x1, y1 exclusive); severity 0–1 (contrast)."""

    class_name: str
    box: tuple[int, int, int, int]
    area_px: int
    severity: float


@dataclass(frozen=True, slots=True)
class SamplePart:
    """image: (H, W, 3) uint8 BGR. mask: (H, W) bool, True on defect pixels."""

    image: np.ndarray
    mask: np.ndarray
    defects: list[DefectTruth] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "defective" if self.defects else "good"


@dataclass(frozen=True, slots=True)
class _Layout:
    """The bracket's geometry in part coordinates (centred on the image)."""

    plate: np.ndarray  # (H, W) float32 0–1 coverage of the plate (holes cut out)
    face: np.ndarray  # (H, W) bool: where defects may be drawn (away from edges and holes)


def render_part(
    rng: np.random.Generator, width: int = 640, height: int = 480, defects: Sequence[str] = ()
) -> SamplePart:
    """Render one part; `defects` lists the defect classes to draw (empty: a good part)."""
    s = width / NOMINAL_WIDTH
    layout = _bracket_layout(width, height, s)
    plate_bgr = _brushed_aluminium(rng, width, height, s)
    plate_bgr = _shade_edges(plate_bgr, layout.plate, s)

    masks: list[tuple[str, float, np.ndarray]] = []
    taken = np.zeros((height, width), bool)
    for name in defects:
        severity = float(rng.uniform(*SEVERITY_RANGE))
        mask = _draw_defect(rng, name, plate_bgr, layout.face & ~taken, s, severity)
        masks.append((name, severity, mask))
        taken |= cv2.dilate(mask.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)

    # The part sits in a fixture: a little translation and rotation, never exact.
    angle_deg = float(rng.uniform(-1.5, 1.5))
    shift = rng.uniform(-6.0, 6.0, size=2) * s
    warp = np.asarray(cv2.getRotationMatrix2D((width / 2, height / 2), angle_deg, 1.0), np.float64)
    warp[:, 2] += shift
    plate_img = cv2.warpAffine(plate_bgr, warp, (width, height), flags=cv2.INTER_LINEAR)
    coverage = cv2.warpAffine(layout.plate, warp, (width, height), flags=cv2.INTER_LINEAR)[:, :, None]

    scene = _conveyor(rng, width, height, s)
    shadow = cv2.GaussianBlur(coverage[:, :, 0], (0, 0), 5 * s)
    shadow = np.roll(shadow, (round(5 * s), round(4 * s)), axis=(0, 1))
    scene *= (1.0 - 0.45 * shadow)[:, :, None]
    scene = scene * (1.0 - coverage) + plate_img * coverage

    scene = _lighting(rng, scene, s)
    scene += rng.normal(0.0, 1.5, size=scene.shape).astype(np.float32)
    image = np.clip(scene + 0.5, 0, 255).astype(np.uint8)

    total = np.zeros((height, width), bool)
    truths = []
    for name, severity, mask in masks:
        warped = cv2.warpAffine(mask.astype(np.uint8), warp, (width, height), flags=cv2.INTER_NEAREST) > 0
        total |= warped
        ys, xs = np.nonzero(warped)
        if len(xs) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        truths.append(DefectTruth(name, box, int(warped.sum()), round(severity, 3)))
    return SamplePart(image, total, truths)


def sample_rng(seed: int, label: str, index: int) -> np.random.Generator:
    """The random stream of one image: depends only on (seed, label, index)."""
    return np.random.default_rng([seed, _LABEL_CODE[label], index])


def defects_for(rng: np.random.Generator, index: int) -> list[str]:
    """Defect classes for defective image `index`: classes take turns; one in five gets a second defect."""
    names = [DEFECT_CLASSES[index % len(DEFECT_CLASSES)]]
    if rng.random() < 0.2:
        names.append(DEFECT_CLASSES[int(rng.integers(len(DEFECT_CLASSES)))])
    return names


def generate(
    seed: int, good: int, defective: int, width: int = 640, height: int = 480
) -> Iterator[tuple[str, int, SamplePart]]:
    """Yield (label, index, part): the good parts first, then the defective ones."""
    for i in range(good):
        yield "good", i, render_part(sample_rng(seed, "good", i), width, height)
    for i in range(defective):
        rng = sample_rng(seed, "defective", i)
        yield "defective", i, render_part(rng, width, height, defects_for(rng, i))


def write_sample_set(
    out_dir: Path,
    *,
    good: int,
    defective: int,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    progress: bool = False,
) -> dict[str, object]:
    """Write good/*.png, defective/*.png, masks/*.png and manifest.json into out_dir.

    Returns the manifest. Existing sample files of the same names are overwritten.
    """
    from tqdm import tqdm

    for sub in ("good", "defective", "masks"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    parts = generate(seed, good, defective, width, height)
    # No bar at all when progress is off: a disabled tqdm bar is never closed, which keeps
    # tqdm's monitor thread alive; `with` closes a real one even when a write fails.
    bar_or_none = tqdm(total=good + defective, desc="samples", unit="img") if progress else nullcontext()
    with bar_or_none as bar:
        for label, index, part in parts:
            stem = f"{label}_{index:03d}"
            file = f"{label}/{stem}.png"
            _write_png(out_dir / file, part.image)
            entry: dict[str, object] = {"file": file, "label": label, "classes": [], "mask": None, "defects": []}
            if part.defects:
                mask_file = f"masks/{stem}.png"
                _write_png(out_dir / mask_file, part.mask.astype(np.uint8) * 255)
                entry["classes"] = sorted({d.class_name for d in part.defects})
                entry["mask"] = mask_file
                entry["defects"] = [
                    {"class": d.class_name, "box": list(d.box), "area_px": d.area_px, "severity": d.severity}
                    for d in part.defects
                ]
            entries.append(entry)
            if bar is not None:
                bar.update()
    manifest: dict[str, object] = {
        "schema": MANIFEST_SCHEMA,
        "generator": "lineinspect samples",
        "seed": seed,
        "width": width,
        "height": height,
        "created_at": utc_now_iso("seconds"),
        "defect_classes": list(DEFECT_CLASSES),
        "images": entries,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 6]):
        raise OSError(f"{path}: cannot write the PNG file")


# --- the part -----------------------------------------------------------------


def _bracket_layout(width: int, height: int, s: float) -> _Layout:
    cx, cy = width / 2, height / 2
    half_w, half_h, radius = 190 * s, 120 * s, 26 * s
    plate = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
    # Draw at 4x sub-pixel precision so the outline is anti-aliased after the blur below.
    sh = 2
    f = 1 << sh

    def pt(x: float, y: float) -> tuple[int, int]:
        return round(x * f), round(y * f)

    cv2.rectangle(plate, pt(x0 + radius, y0), pt(x1 - radius, y1), 255, -1, cv2.LINE_AA, sh)
    cv2.rectangle(plate, pt(x0, y0 + radius), pt(x1, y1 - radius), 255, -1, cv2.LINE_AA, sh)
    for x, y in (
        (x0 + radius, y0 + radius),
        (x1 - radius, y0 + radius),
        (x0 + radius, y1 - radius),
        (x1 - radius, y1 - radius),
    ):
        cv2.circle(plate, pt(x, y), round(radius * f), 255, -1, cv2.LINE_AA, sh)
    holes = np.zeros_like(plate)
    hole_r = 15 * s
    for x, y in (
        (x0 + 42 * s, y0 + 42 * s),
        (x1 - 42 * s, y0 + 42 * s),
        (x0 + 42 * s, y1 - 42 * s),
        (x1 - 42 * s, y1 - 42 * s),
    ):
        cv2.circle(holes, pt(x, y), round(hole_r * f), 255, -1, cv2.LINE_AA, sh)
    slot_half, slot_r = 55 * s, 17 * s
    cv2.line(holes, pt(cx - slot_half, cy), pt(cx + slot_half, cy), 255, round(2 * slot_r), cv2.LINE_AA, sh)
    for x in (cx - slot_half, cx + slot_half):
        cv2.circle(holes, pt(x, cy), round(slot_r * f), 255, -1, cv2.LINE_AA, sh)
    coverage = np.clip(plate.astype(np.float32) - holes.astype(np.float32), 0, 255) / 255.0
    margin = max(3, round(16 * s))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    face = cv2.erode((coverage > 0.5).astype(np.uint8), kernel) > 0
    return _Layout(coverage, face)


def _brushed_aluminium(rng: np.random.Generator, width: int, height: int, s: float) -> np.ndarray:
    """(H, W, 3) float32 BGR plate: streaks along x, a faint waviness, a slightly bluish grey."""
    noise = rng.normal(0.0, 1.0, size=(height, width)).astype(np.float32)
    streak = max(3, round(41 * s)) | 1
    streaks = np.asarray(cv2.blur(noise, (streak, 1)), np.float32)
    streaks = streaks / (float(streaks.std()) + 1e-6)
    coarse = cv2.resize(
        rng.normal(0.0, 1.0, size=(6, 8)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    base = float(rng.uniform(158, 176))
    grey = base + 5.0 * streaks + 3.0 * coarse
    tint = np.array([1.03, 1.0, 0.97], np.float32) * rng.uniform(0.99, 1.01, size=3).astype(np.float32)
    return grey[:, :, None] * tint


def _shade_edges(plate_bgr: np.ndarray, coverage: np.ndarray, s: float) -> np.ndarray:
    """A chamfer along every edge: lit from the top left, so it shines there and darkens opposite."""
    soft = cv2.GaussianBlur(coverage, (0, 0), 2.0 * s)
    gx = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3)
    light = (gx + gy) * 0.7071  # inward normal · light direction
    edge = 55.0 * np.clip(light * 2.0 * s, -1.0, 1.0)
    return plate_bgr + edge[:, :, None]


def _conveyor(rng: np.random.Generator, width: int, height: int, s: float) -> np.ndarray:
    """(H, W, 3) float32 BGR: a dark rubber belt with ribs across the direction of travel, two fixture rails."""
    phase = rng.uniform(0, 2 * math.pi)
    y = np.arange(height, dtype=np.float32)[:, None]
    ribs = 5.0 * np.sin(2 * math.pi * y / (14 * s) + phase)
    grain = cv2.GaussianBlur(rng.normal(0.0, 7.0, size=(height, width)).astype(np.float32), (0, 0), 1.2 * s)
    belt = 58.0 + ribs + grain
    scene = np.repeat(belt[:, :, None], 3, axis=2) * np.array([1.06, 1.0, 0.94], np.float32)
    rail_h = round(26 * s)
    top = round(height / 2 - 150 * s)
    for y0 in (max(0, top - rail_h), min(height - rail_h, round(height / 2 + 150 * s))):
        bar = np.linspace(120, 92, rail_h, dtype=np.float32)[:, None, None]
        scene[y0 : y0 + rail_h] = bar + rng.normal(0.0, 2.0, size=(rail_h, width, 1)).astype(np.float32)
    return scene


def _lighting(rng: np.random.Generator, scene: np.ndarray, s: float) -> np.ndarray:
    """A brightness that drifts from part to part, a linear gradient and a soft vignette."""
    height, width = scene.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = (xs - width / 2) / width, (ys - height / 2) / height
    direction = rng.uniform(0, 2 * math.pi)
    gradient = 0.16 * (math.cos(direction) * u + math.sin(direction) * v)
    vignette = 0.12 * (u * u + v * v)
    gain = float(rng.uniform(0.9, 1.1)) * (1.0 + gradient - vignette)
    return scene * gain[:, :, None]


# --- defects ------------------------------------------------------------------


def _draw_defect(
    rng: np.random.Generator, name: str, plate: np.ndarray, allowed: np.ndarray, s: float, severity: float
) -> np.ndarray:
    """Draw one defect of class `name` onto plate (in place); return its (H, W) bool mask.

    severity: 0–1, scales the defect's contrast (1: plain to see; 0.3: faint).
    """
    ys, xs = np.nonzero(allowed)
    if len(xs) == 0:
        return np.zeros(allowed.shape, bool)
    k = int(rng.integers(len(xs)))
    centre = np.array([xs[k], ys[k]], np.float32)
    before = plate.copy()
    if name == "scratch":
        mask = _scratch(rng, plate, centre, s, severity)
    elif name == "dent":
        mask = _dent(rng, plate, centre, s, severity)
    elif name == "crack":
        mask = _crack(rng, plate, centre, s, severity)
    elif name == "contamination":
        mask = _stain(rng, plate, centre, s, severity)
    else:
        raise ValueError(f"unknown defect class '{name}'; known: {', '.join(DEFECT_CLASSES)}")
    # A defect that runs off the face is cut where it would reach an edge or a hole, in the
    # picture and in the mask alike, so the ground truth marks every changed pixel.
    keep = cv2.dilate(allowed.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    plate[~keep] = before[~keep]
    return mask & keep


def _polyline_layer(shape: tuple[int, int], paths: list[np.ndarray], thickness: int) -> np.ndarray:
    """Anti-aliased lines as a (H, W) float32 0–1 layer."""
    layer = np.zeros(shape, np.uint8)
    sh = 2
    for path in paths:
        pts = np.round(path * (1 << sh)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(layer, [pts], False, 255, thickness, cv2.LINE_AA, sh)
    return layer.astype(np.float32) / 255.0


def _lines_mask(layer: np.ndarray) -> np.ndarray:
    return cv2.dilate((layer > 0.15).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def _scratch(rng: np.random.Generator, plate: np.ndarray, centre: np.ndarray, s: float, severity: float) -> np.ndarray:
    length = rng.uniform(60, 150) * s
    angle = rng.uniform(0, math.pi)
    d = np.array([math.cos(angle), math.sin(angle)], np.float32)
    normal = np.array([-d[1], d[0]], np.float32)
    bend = rng.uniform(-0.15, 0.15) * length
    t = np.linspace(-0.5, 0.5, 40, dtype=np.float32)[:, None]
    path = centre + t * length * d + (1 - 4 * t * t) * bend * normal
    layer = _polyline_layer(plate.shape[:2], [path], max(1, round(rng.uniform(1, 2.5) * s)))
    # A scratch catches the light (bright) or shows the dark bottom of the groove.
    contrast = severity * rng.uniform(45, 75) * (1 if rng.random() < 0.5 else -1)
    plate += (contrast * layer)[:, :, None]
    return _lines_mask(layer)


def _dent(rng: np.random.Generator, plate: np.ndarray, centre: np.ndarray, s: float, severity: float) -> np.ndarray:
    h, w = plate.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.3:
        # A pit: small, dark, sharp-edged.
        r = rng.uniform(4, 8) * s
        dist2 = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (r * r)
        spot = np.clip(1.3 - dist2, 0, 1).astype(np.float32)
        plate -= (severity * rng.uniform(60, 90) * spot)[:, :, None]
        return dist2 <= 1.0
    rx, ry = rng.uniform(9, 18, size=2) * s
    theta = rng.uniform(0, math.pi)
    c, si = math.cos(theta), math.sin(theta)
    dx, dy = xs - centre[0], ys - centre[1]
    u, v = (c * dx + si * dy) / rx, (-si * dx + c * dy) / ry
    depth = np.exp(-2.0 * (u * u + v * v)).astype(np.float32)
    gx = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    # The slope facing the light (top left) is bright, the other side dark; the hollow is a bit darker.
    shading = severity * (-(gx + gy) * rng.uniform(5, 8) * (rx + ry) / 2 - 22.0 * depth)
    plate += shading[:, :, None]
    return (u * u + v * v) <= 1.0


def _crack(rng: np.random.Generator, plate: np.ndarray, centre: np.ndarray, s: float, severity: float) -> np.ndarray:
    def walk(start: np.ndarray, heading: float, length: float) -> np.ndarray:
        # Jagged but going somewhere: each step turns at random and is pulled back to the course.
        step = 3.0 * s
        course, pts = heading, [start]
        for _ in range(max(2, int(length / step))):
            heading = course + 0.6 * (heading - course) + float(rng.normal(0.0, 0.4))
            pts.append(pts[-1] + step * np.array([math.cos(heading), math.sin(heading)], np.float32))
        return np.array(pts, np.float32)

    heading = rng.uniform(0, 2 * math.pi)
    main = walk(centre, heading, rng.uniform(45, 100) * s)
    paths = [main]
    for _ in range(int(rng.integers(1, 4))):
        at = main[int(rng.integers(len(main) // 4, len(main)))]
        paths.append(walk(at, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), rng.uniform(15, 40) * s))
    layer = _polyline_layer(plate.shape[:2], paths, max(1, round(1.2 * s)))
    layer = cv2.GaussianBlur(layer, (0, 0), 0.6)
    plate -= (severity * rng.uniform(70, 100) * np.clip(layer * 1.4, 0, 1))[:, :, None]
    return _lines_mask(layer)


def _stain(rng: np.random.Generator, plate: np.ndarray, centre: np.ndarray, s: float, severity: float) -> np.ndarray:
    h, w = plate.shape[:2]
    blob = np.zeros((h, w), np.uint8)
    size = rng.uniform(10, 20) * s
    for _ in range(int(rng.integers(3, 8))):
        offset = rng.normal(0.0, size * 0.6, size=2)
        r = max(2, round(rng.uniform(0.4, 0.9) * size))
        cv2.circle(blob, (round(centre[0] + offset[0]), round(centre[1] + offset[1])), r, 255, -1, cv2.LINE_AA)
    alpha = cv2.GaussianBlur(blob.astype(np.float32) / 255.0, (0, 0), 2.0 * s)
    # Oil and grease: brownish and darker than the metal, partly see-through.
    colour = np.array([rng.uniform(30, 50), rng.uniform(55, 75), rng.uniform(70, 95)], np.float32)
    strength = severity * rng.uniform(0.55, 0.8)
    a = (alpha * strength)[:, :, None]
    plate[:] = plate * (1 - a) + colour * a
    return alpha > 0.3
