"""Frame plausibility: is this frame an image of a part that the model can judge? (DESIGN.md §12)

A camera with its lens covered, its light failed, its focus lost or the wrong ROI still delivers
frames, and an anomaly model scores a black or a tiny frame like any other: it can pass. So every
frame, camera or upload, is measured before the model and refused (`undecided`, kind
`plausibility`) when a measure is outside its limit:

- size: the camera's configured size (`width_px`/`height_px`) and the model's minimum (each side at
  least a quarter of the model's input: a frame enlarged more than 4x shows the model no detail it
  was taught on);
- brightness: the mean grey level, and the clipped shares (pixels at or below `DARK_LEVEL`: black,
  at or above `BRIGHT_LEVEL`: saturated);
- contrast: the standard deviation of the grey levels (a covered lens, a flat grey frame);
- focus: the variance of the Laplacian (a blurred frame loses it first);
- noise: an estimate of the sensor noise's sigma (Immerkær's operator: gain up, light failing);
- part present, where a recipe says how (`PartPresent`: a region's mean level and contrast).

The measures are taken at the model's input resolution, on the region the model sees (the recipe's
ROI): what the model cannot see does not matter, the measures of frames of any size compare with the
taught baseline, and the cost is bounded by the input size (about 0.15 ms at 320x240). The region is
stretched to that size in its own colours first (`preprocess.stretch`: the very image a stretch card is
given) and turned grey after: for such a card the Inspector resizes a frame once for both, instead of a
grey copy of the whole frame and a second resize. Taught baselines (`baseline_of_images`) are measured by
the same function. Against the grey-first order of before, only rounding differs: mean, contrast and
focus within 0.3 %, the noise estimate 0–3 % higher (its extra rounding noise), far inside every limit.

Limits come, most specific last: the model card's taught baseline (`FrameBaseline.limits()`, learnt
by `teach` and `retune` from the good images) or, for a card without one, `FALLBACK_LIMITS`; then
the recipe's `frame:` section; then the camera's `frame:` section (its configured size included).
Everything here is a pure function of the frame and the limits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lineinspect.core.preprocess import stretch

DARK_LEVEL = 5  # grey level at or below which a pixel counts as black (clipped dark)
BRIGHT_LEVEL = 250  # grey level at or above which a pixel counts as saturated
MODEL_MIN_SIDE_SHARE = 4  # a frame side under 1/4 of the model's input side is refused
MIN_SIDE_FLOOR_PX = 8

# Taught limits from the good images' spread (low = 1st percentile, high = 99th, over the good images):
# far enough outside it that a good part never reaches them, close enough that a failed light, a
# covered lens or a lost focus does. The drift warning (line/camera_health) sits at a quarter of the
# baseline, well before these.
MEAN_LEVEL_LOW_FACTOR = 0.5  # darker than half the darkest good part's mean
MEAN_LEVEL_HEADROOM_SHARE = 0.5  # brighter than half way from the brightest good part to white
CLIPPED_SHARE_MARGIN = 0.25  # clipped share over the good parts' highest + 25 points
MAX_CLIPPED_SHARE = 0.98  # a frame clipped this much is never a part, whatever was taught
CONTRAST_LOW_FACTOR = 0.5  # half the least contrasted good part's contrast
FOCUS_LOW_FACTOR = 0.35  # the Laplacian's variance falls fast with blur; a good part never loses 65 %
NOISE_HIGH_FACTOR = 2.0  # twice the noisiest good part's noise (plus one grey level)


@dataclass(frozen=True, slots=True)
class FrameMeasures:
    """What plausibility measures of one frame (grey levels 0–255, at the model's input resolution)."""

    width_px: int  # the frame's own size, before any ROI
    height_px: int
    mean_level: float
    dark_share: float  # 0–1: pixels <= DARK_LEVEL
    bright_share: float  # 0–1: pixels >= BRIGHT_LEVEL
    contrast: float  # standard deviation of the grey levels
    focus: float  # variance of the Laplacian
    noise: float  # estimated sigma of the sensor noise, grey levels

    def as_measurements(self) -> dict[str, float | None]:
        """The result's `measurements` entries (`frame_*`), as the MES and the camera health read them."""
        return {
            "frame_mean_level": self.mean_level,
            "frame_dark_share": self.dark_share,
            "frame_bright_share": self.bright_share,
            "frame_contrast": self.contrast,
            "frame_focus": self.focus,
            "frame_noise": self.noise,
        }


MEASURE_NAMES = ("mean_level", "dark_share", "bright_share", "contrast", "focus", "noise")


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def measure_frame(region: np.ndarray, *, width_px: int, height_px: int, frame_shape: Sequence[int]) -> FrameMeasures:
    """Measure `region` ((H, W) grey or (H, W, 3) BGR uint8: what the model sees) at width_px × height_px.

    frame_shape: the whole frame's shape (its size is what the size check compares).
    """
    return measure_stretched(stretch(region, width_px, height_px), frame_shape=frame_shape)


def measure_stretched(stretched: np.ndarray, *, frame_shape: Sequence[int]) -> FrameMeasures:
    """Measure a region already stretched to the measuring size: `stretch(region, width_px, height_px)`.

    frame_shape: the whole frame's shape (its size is what the size check compares).
    """
    gray = _gray(stretched)
    pixels = float(gray.size)
    mean, std = cv2.meanStdDev(gray)
    # One pass each, in OpenCV: a histogram for the clipped shares, and the Laplacian in 16-bit integers (3x3
    # on uint8 stays within ±2040, exact) with its variance from meanStdDev, summed in double precision as
    # numpy's var would: the same figures at about a tenth of the float64 passes' cost.
    histogram = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_16S, ksize=3))
    return FrameMeasures(
        width_px=int(frame_shape[1]),
        height_px=int(frame_shape[0]),
        mean_level=float(mean[0][0]),
        dark_share=float(histogram[: DARK_LEVEL + 1].sum()) / pixels,
        bright_share=float(histogram[BRIGHT_LEVEL:].sum()) / pixels,
        contrast=float(std[0][0]),
        focus=float(laplacian_std[0][0]) ** 2,
        noise=noise_sigma(gray),
    )


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkær's fast noise estimate (grey levels) of an (H, W) uint8 image; 0 for an image under 3x3."""
    h, w = gray.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    # The response of a uint8 image stays within ±4080: exact in 16-bit integers; the L1 norm sums in double.
    response = cv2.filter2D(gray, cv2.CV_16S, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * cv2.norm(response, cv2.NORM_L1) / (6.0 * (w - 2) * (h - 2)))


class FrameLimits(BaseModel):
    """Limits a frame must keep to be inspected; a field left out keeps the taught (or fixed) limit.

    Set a field to null to switch that check off (e.g. `min_contrast: null` for a part that is
    really flat). Grey levels are 0–255; shares 0–1.
    """

    model_config = ConfigDict(extra="forbid")

    width_px: int | None = Field(None, gt=0, description="The frame width the camera is configured for (exact).")
    height_px: int | None = Field(None, gt=0, description="The frame height the camera is configured for (exact).")
    min_width_px: int | None = Field(None, gt=0, description="Narrowest frame inspected (default: model input / 4).")
    min_height_px: int | None = Field(None, gt=0, description="Lowest frame inspected (default: model input / 4).")
    min_mean_level: float | None = Field(None, ge=0, le=255, description="Darkest mean grey level (light failed).")
    max_mean_level: float | None = Field(None, ge=0, le=255, description="Brightest mean grey level (overexposed).")
    max_dark_share: float | None = Field(None, ge=0, le=1, description=f"Largest share of pixels <= {DARK_LEVEL}.")
    max_bright_share: float | None = Field(
        None, ge=0, le=1, description=f"Largest share of saturated pixels (>= {BRIGHT_LEVEL})."
    )
    min_contrast: float | None = Field(None, ge=0, description="Smallest std of grey levels (flat, covered lens).")
    min_focus: float | None = Field(None, ge=0, description="Smallest variance of the Laplacian (blurred).")
    max_noise: float | None = Field(None, ge=0, description="Largest estimated noise sigma in grey levels.")


# For a card without a taught baseline: only what is never an image of a part (black, saturated, far
# too small). Contrast, focus and noise need a baseline: a flat part is possible, and what is sharp
# enough depends on the part and the optics, so without one they are not checked.
FALLBACK_LIMITS = FrameLimits(
    min_mean_level=8.0,
    max_mean_level=247.0,
    max_dark_share=0.95,
    max_bright_share=0.95,
)


class MeasureSpread(BaseModel):
    """One measure over the good images: 1st percentile, median, 99th percentile."""

    model_config = ConfigDict(extra="forbid")

    low: float = Field(..., description="1st percentile over the good images (their lowest, for few).")
    median: float = Field(..., description="Median over the good images.")
    high: float = Field(..., description="99th percentile over the good images (their highest, for few).")


class FrameBaseline(BaseModel):
    """What frames of good parts looked like when the model was taught (or retuned): the card's `frame_baseline`."""

    model_config = ConfigDict(extra="forbid")

    images: int = Field(..., gt=0, description="Good images measured.")
    measured_width_px: int = Field(..., gt=0, description="Resolution measured at: the model input width.")
    measured_height_px: int = Field(..., gt=0, description="Resolution measured at: the model input height.")
    frame_sizes: list[str] = Field(default_factory=list, description="Frame sizes seen (WxH).")
    mean_level: MeasureSpread = Field(..., description="Mean grey level (0–255) of the good frames.")
    dark_share: MeasureSpread = Field(..., description="Share (0–1) of near-black pixels in the good frames.")
    bright_share: MeasureSpread = Field(..., description="Share (0–1) of near-saturated pixels in the good frames.")
    contrast: MeasureSpread = Field(..., description="Standard deviation of the grey levels of the good frames.")
    focus: MeasureSpread = Field(..., description="Variance of the Laplacian (sharpness) of the good frames.")
    noise: MeasureSpread = Field(..., description="Estimated sensor-noise sigma (grey levels) of the good frames.")

    def spread(self, measure: str) -> MeasureSpread:
        spread: MeasureSpread = getattr(self, measure)
        return spread

    def limits(self) -> FrameLimits:
        """The limits taught from this baseline (see the factors above)."""
        mean, contrast, focus, noise = self.mean_level, self.contrast, self.focus, self.noise
        return FrameLimits(
            min_mean_level=round(max(FALLBACK_LIMITS.min_mean_level or 0.0, mean.low * MEAN_LEVEL_LOW_FACTOR), 3),
            max_mean_level=round(
                min(
                    FALLBACK_LIMITS.max_mean_level or 255.0,
                    mean.high + (255.0 - mean.high) * MEAN_LEVEL_HEADROOM_SHARE,
                ),
                3,
            ),
            max_dark_share=round(min(MAX_CLIPPED_SHARE, self.dark_share.high + CLIPPED_SHARE_MARGIN), 4),
            max_bright_share=round(min(MAX_CLIPPED_SHARE, self.bright_share.high + CLIPPED_SHARE_MARGIN), 4),
            min_contrast=round(contrast.low * CONTRAST_LOW_FACTOR, 4),
            min_focus=round(focus.low * FOCUS_LOW_FACTOR, 4),
            max_noise=round(noise.high * NOISE_HIGH_FACTOR + 1.0, 4),
        )


def baseline_from(measures: Sequence[FrameMeasures], *, width_px: int, height_px: int) -> FrameBaseline:
    """The baseline of good frames' measures (taken at width_px × height_px, the model input)."""
    if not measures:
        raise ValueError("a frame baseline needs at least one good image")

    def spread(name: str) -> MeasureSpread:
        values = np.array([getattr(m, name) for m in measures], dtype=np.float64)
        low, median, high = np.quantile(values, [0.01, 0.5, 0.99])
        return MeasureSpread(low=round(float(low), 4), median=round(float(median), 4), high=round(float(high), 4))

    sizes = sorted({f"{m.width_px}x{m.height_px}" for m in measures})
    return FrameBaseline(
        images=len(measures),
        measured_width_px=width_px,
        measured_height_px=height_px,
        frame_sizes=sizes,
        **{name: spread(name) for name in MEASURE_NAMES},
    )


def baseline_of_images(images: Iterable[np.ndarray], *, width_px: int, height_px: int) -> FrameBaseline:
    """The baseline of good images ((H, W) or (H, W, 3) uint8, whole frames as the model sees them), measured at
    the model input's width_px × height_px (what `teach` and `retune` write into the card)."""
    measures = [measure_frame(im, width_px=width_px, height_px=height_px, frame_shape=im.shape) for im in images]
    return baseline_from(measures, width_px=width_px, height_px=height_px)


class PartPresent(BaseModel):
    """How a recipe tells that a part is in the frame: a region's mean grey level and contrast.

    E.g. a dark part on a bright belt: `max_mean_level: 120` over the region where the part lies.
    """

    model_config = ConfigDict(extra="forbid")

    x: int = Field(0, ge=0, description="Region's left edge in frame pixels.")
    y: int = Field(0, ge=0, description="Region's top edge in frame pixels.")
    width: int | None = Field(None, gt=0, description="Region width in px (default: to the frame's right edge).")
    height: int | None = Field(None, gt=0, description="Region height in px (default: to the frame's bottom).")
    min_mean_level: float | None = Field(None, ge=0, le=255, description="The region is at least this bright.")
    max_mean_level: float | None = Field(None, ge=0, le=255, description="The region is at most this bright.")
    min_contrast: float | None = Field(None, ge=0, description="The region's grey levels vary at least this much.")


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits that apply to one recipe (and camera), and where each came from (taught, fixed, recipe, camera)."""

    limits: FrameLimits
    origins: Mapping[str, str]
    part_present: PartPresent | None = None

    def origin(self, name: str) -> str:
        return self.origins.get(name, "fixed")


def resolve_limits(
    baseline: FrameBaseline | None,
    *,
    input_width_px: int,
    input_height_px: int,
    overrides: Iterable[tuple[str, FrameLimits | None]] = (),
    part_present: PartPresent | None = None,
) -> ResolvedLimits:
    """The taught limits (or `FALLBACK_LIMITS`), the model's minimum size, then each named override in order.

    overrides: (origin, limits) pairs, e.g. ("recipe 'part'", recipe.frame), ("camera 'cam1'", camera.frame);
    only the fields an override sets count (an explicit null switches the check off).
    """
    base = baseline.limits() if baseline is not None else FALLBACK_LIMITS
    base_origin = "taught" if baseline is not None else "fixed"
    values = base.model_dump()
    origins = {name: base_origin for name, value in values.items() if value is not None}
    values["min_width_px"] = max(MIN_SIDE_FLOOR_PX, math.ceil(input_width_px / MODEL_MIN_SIDE_SHARE))
    values["min_height_px"] = max(MIN_SIDE_FLOOR_PX, math.ceil(input_height_px / MODEL_MIN_SIDE_SHARE))
    origins["min_width_px"] = origins["min_height_px"] = "model input / 4"
    for origin, limits in overrides:
        if limits is None:
            continue
        for name, value in limits.model_dump(exclude_unset=True).items():
            values[name] = value
            origins[name] = origin
    return ResolvedLimits(FrameLimits(**values), origins, part_present)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def check_frame(image: np.ndarray, measures: FrameMeasures, resolved: ResolvedLimits) -> list[str]:
    """Every check the frame fails, each naming the check, the measured value and its limit; [] = plausible.

    image: the whole frame ((H, W) or (H, W, 3) uint8), for the part-present region.
    """
    limits = resolved.limits
    failures: list[str] = []

    def fail(check: str, measured: str, op: str, limit: str, field: str) -> None:
        failures.append(f"{check} {measured} {op} {limit} ({field}, {resolved.origin(field)})")

    w, h = measures.width_px, measures.height_px
    if limits.width_px is not None and w != limits.width_px:
        fail("frame width", f"{w} px", "!=", f"{limits.width_px} px", "width_px")
    if limits.height_px is not None and h != limits.height_px:
        fail("frame height", f"{h} px", "!=", f"{limits.height_px} px", "height_px")
    if limits.min_width_px is not None and w < limits.min_width_px:
        fail("frame width", f"{w} px", "<", f"{limits.min_width_px} px", "min_width_px")
    if limits.min_height_px is not None and h < limits.min_height_px:
        fail("frame height", f"{h} px", "<", f"{limits.min_height_px} px", "min_height_px")
    checks: list[tuple[str, float, str, float | None, str]] = [
        ("brightness (mean level)", measures.mean_level, "<", limits.min_mean_level, "min_mean_level"),
        ("brightness (mean level)", measures.mean_level, ">", limits.max_mean_level, "max_mean_level"),
        ("black (dark share)", measures.dark_share, ">", limits.max_dark_share, "max_dark_share"),
        ("saturated (bright share)", measures.bright_share, ">", limits.max_bright_share, "max_bright_share"),
        ("contrast", measures.contrast, "<", limits.min_contrast, "min_contrast"),
        ("focus (Laplacian variance)", measures.focus, "<", limits.min_focus, "min_focus"),
        ("noise", measures.noise, ">", limits.max_noise, "max_noise"),
    ]
    for check, value, op, limit, field in checks:
        if limit is not None and (value < limit if op == "<" else value > limit):
            fail(check, _fmt(value), op, _fmt(limit), field)
    if resolved.part_present is not None:
        failures.extend(_part_present_failures(image, resolved.part_present))
    return failures


def _part_present_failures(image: np.ndarray, rule: PartPresent) -> list[str]:
    h, w = image.shape[:2]
    x1 = w if rule.width is None else min(w, rule.x + rule.width)
    y1 = h if rule.height is None else min(h, rule.y + rule.height)
    if rule.x >= x1 or rule.y >= y1:
        return [f"part present: region {rule.x},{rule.y} lies outside the {w}x{h} frame (recipe part_present)"]
    mean, std = cv2.meanStdDev(_gray(image[rule.y : y1, rule.x : x1]))
    level, contrast = float(mean[0][0]), float(std[0][0])
    out = []
    if rule.min_mean_level is not None and level < rule.min_mean_level:
        out.append(f"part present: mean level {level:.1f} < {rule.min_mean_level:g} (recipe part_present)")
    if rule.max_mean_level is not None and level > rule.max_mean_level:
        out.append(f"part present: mean level {level:.1f} > {rule.max_mean_level:g} (recipe part_present)")
    if rule.min_contrast is not None and contrast < rule.min_contrast:
        out.append(f"part present: contrast {contrast:.1f} < {rule.min_contrast:g} (recipe part_present)")
    return out


def implausible_reason(failures: Sequence[str]) -> str:
    """The undecided result's reason: every failed check, the first first."""
    return "implausible frame: " + "; ".join(failures)
